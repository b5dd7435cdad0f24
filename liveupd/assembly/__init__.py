"""The engine put together: the built-in steps, where each sits, and their undo table.

``transition/`` is the engine and knows no built-in step; the domain packages
(``kernel``, ``devices``, ``storage``) each provide theirs on top of it; this
package, above them all, hands both the steps and the undo handlers to the
engine (``make_engine``).
"""

from liveupd.assembly.engine import make_engine

__all__ = ["make_engine"]
