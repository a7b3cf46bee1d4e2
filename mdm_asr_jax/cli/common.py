"""What the console scripts share: starting absl with a CLI's own flags."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from absl import app, flags


def run_app(main: Callable[[Sequence[str]], None], flag_values: flags.FlagValues) -> None:
    """Adds a CLI's own FlagValues to absl's global flags (listed under --help) and runs."""
    flags.FLAGS.append_flag_values(flag_values)
    for name in flag_values:  # list them under --help (absl shows the key flags of sys.argv[0])
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag_values[name])
    app.run(main)
