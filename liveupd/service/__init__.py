"""The D-Bus face of liveupd: org.liveupd.LiveUpdate1 on the system bus.

``server.serve()`` connects, exports the Manager object and one object per
transition, owns the name and runs until stopped.  The pieces are small
modules named after what they do: ``caller`` (who is calling), ``polkit`` and
``auth`` (may they), ``inhibit`` (does logind let us), ``signals`` (engine
events to D-Bus signals and properties), ``writer_guard`` (a send buffer that
fills must not drop the connection), ``exec_gate`` (the Execute reply leaves
before the jump).
"""
