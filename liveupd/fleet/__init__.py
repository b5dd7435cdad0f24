"""Package managers and fleet tools: kernel install hooks, and what says a reboot is due.

* ``reboot_required``: the newest installed kernel against the running one, and
  the ``reboot-required`` flag file package managers leave (read by
  ``liveupctl status`` and ``liveupctl reboot --if-needed``);
* ``autostage``: what a kernel install or removal hook does over D-Bus;
* ``kernelhook``: the program the shell hooks in ``kernel-install/`` run.
"""
