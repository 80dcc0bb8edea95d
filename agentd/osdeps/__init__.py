"""The platform seam: what differs between Linux, macOS and Windows, one module per concern.

- :mod:`agentd.osdeps.filelock`: the spool's delivery lock (``flock`` / ``msvcrt.locking``);
- :mod:`agentd.osdeps.priority`: a background thread that yields the CPU (the hub's
  argon2 threads: a per-thread nice value on Linux, nothing elsewhere);
- :mod:`agentd.osdeps.control_channel`: where the control channel listens and who may use
  it (a Unix socket with ``SO_PEERCRED``/``getpeereid``; a named pipe with a security
  descriptor and the client's token on Windows);
- :mod:`agentd.osdeps.stop`: how a running daemon is asked to stop or reload (signals on
  POSIX; Ctrl-C, Ctrl-Break and the service manager on Windows);
- :mod:`agentd.osdeps.rxstamp`: when the kernel received a datagram (``SIOCGSTAMPNS`` on
  Linux; elsewhere the caller reads its own clock);
- :mod:`agentd.osdeps.service`: telling the service manager how the daemon is doing
  (systemd's notify socket, the Windows Service Control Manager).

Modules whose names start with ``_posix`` or ``_windows`` are imported only on their
platform; everything else imports on all of them (tests/windows walks every module).
Paths stay in :mod:`agentd.paths` (platformdirs decides there).
"""
