"""The try-out: liveupd in a dry run on a private bus, with a shell to type in (``make try``).

``python -m tryout`` (see ``__main__``); the sample configuration
(``liveupd.conf``), the simulated machine (``machine.json``) and the sample
hooks (``hooks.d/``) are the files beside this one, described in docs/try.md.
"""
