"""The ``liveupd`` program: the D-Bus service, ``--check`` and ``--verify``."""
