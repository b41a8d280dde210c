"""Reference servers the benchmarks run the same load against, on loopback, in the same run.

Issues 4 and 10 judge mailsuite by ratios to Debian's own servers on the same
machine at the same moment (absolute rates move with the disk, the CPU and
whatever else the machine is doing).  Each module here starts a PRIVATE
instance of one peer under a working directory of the caller's choosing (its
own configuration, queue, state and mailboxes; a loopback port; nothing of
the system's installation is touched or started) and stops it again,
whatever happens, when its ``with`` block ends.

- :mod:`bench.peers.postfix`: Postfix as an inbound MX delivering into
  Maildirs, for ``bench/smtp.py``.
"""
