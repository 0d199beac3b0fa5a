"""One module per library: its benchmark jobs, how to enqueue them, how to start its worker.

Each module is imported both by ``driver.py`` (to enqueue) and by the library's worker
process (to register the jobs), in that library's own virtual environment, configured by the
environment variables of :mod:`common` (``BENCH_URL``, ``BENCH_SETTINGS``...).
"""
