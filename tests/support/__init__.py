"""What the tests share: example domains (accounts, aggregates, sagas), test actors and small helpers."""
