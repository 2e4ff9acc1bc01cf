"""The store contract (``eventador.testing.StoreContract``) on every kind of store.

``store_factory`` comes from conftest.py, parametrized over in-memory and on-disk
stores, each also with a tiny ``flush_every``.
"""

from eventador.testing import StoreContract


class TestStoreContract(StoreContract):
    pass
