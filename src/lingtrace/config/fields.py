"""One helper for every config field: a dataclass field carrying its help text and the rules the
CLI, ``lingtrace config --help-keys``, validation and the stage fingerprints read from its metadata.

Field metadata:

* ``help``: one line for ``lingtrace config --help-keys`` and the CLI flag;
* ``choices``: the allowed values (for list fields: of each element);
* ``rerun``: a change of this key reruns a completed stage instead of being refused as a different
  config; the stage keeps what still holds (``influence.methods``: the stores of methods already computed);
* ``new``: a key added after runs existed; at its default it is left out of the stage fingerprints
  (``Config.fingerprint_view``), so runs made before it existed keep their fingerprints;
* ``method``: the one influence method the key concerns (``ekfac_*``): left out of every other method's
  store fingerprint (``config.influence.foreign_keys``), so changing it leaves their stores valid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def option(
    default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING, choices=None, rerun=False, new=False, method=None
):
    """A dataclass field carrying the option's help text, choices and fingerprint rules."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "rerun": rerun, "new": new, "method": method}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)
