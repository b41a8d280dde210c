"""Users, domains, aliases and logins.

- :mod:`.addresses` validates and normalises addresses and domains.
- :mod:`.hashing` makes argon2id hashes and verifies them and the Dovecot
  passwd-file schemes (``{ARGON2ID}``, ``{BLF-CRYPT}``, ``{SHA512-CRYPT}``).
- :mod:`.directory` is the SQLite user directory (IUserDirectory + admin methods).
- :mod:`.throttle` slows down and refuses repeated login failures.
- :mod:`.portal` is the twisted.cred checker, realm and avatar.
- :mod:`.login` is the throttled authenticator every protocol calls.
- :mod:`.service` wires them into a server (a ``service.PARTS`` opener).
- :mod:`.cli` adds the ``user``, ``alias`` and ``domain`` admin commands.
"""
