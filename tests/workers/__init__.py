"""The programs crash and concurrency tests run as child processes (and kill with SIGKILL)."""
