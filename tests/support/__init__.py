"""Helpers the tests share: servers, databases, upstreams, waiting. Test files import from here,
never from one another (tests/test_layout.py holds that); fixtures stay in conftest.py."""
