"""The test suite is a package: pytest then puts the repository root on ``sys.path`` (the first folder
up without ``__init__.py``), test modules get unique names (``tests.broker.core.test_store``), and
``tests/broker`` is ``tests.broker``, which cannot hide the ``broker`` package."""
