"""`python -m algebranets.costs ...`: see `algebranets.cost_report`.

The command builds models and resolves configs as the trainer does, so its code sits above the
models and the trainer, in `algebranets.cost_report`; this package (the counting) sits below
the models, and this file only starts the command.
"""

import sys

from algebranets import cost_report
from algebranets import errors

if __name__ == "__main__":
  sys.exit(errors.run_cli(cost_report.main, sys.argv[1:]))
