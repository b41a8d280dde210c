"""Registers `twistd mailsuite`; everything else lives in mailsuite.tap."""

from twisted.application.service import ServiceMaker

mailsuite = ServiceMaker("mailsuite", "mailsuite.tap", "Run the mailsuite mail server.", "mailsuite")
