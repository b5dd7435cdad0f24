"""Remote login sessions, ended before the network goes down (issue 20).

``plan.py`` (pure) decides which sessions end and in what order, ``step.py``
is the built-in quiesce step that stops the remote-login listeners (so that no
new login starts) and ends them, ``logind.py`` the real backend
(org.freedesktop.login1 on the system bus; the listeners through ``units.py``,
systemctl); the dry-run machine simulates it.
"""
