"""Mail-auth fixtures (defined in tests/mailauth/helpers.py)."""

from tests.mailauth.helpers import dns, make_auth  # noqa: F401
