"""Tests of mailsuite.store (the Maildir store)."""
