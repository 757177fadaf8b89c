"""Regenerate a depth study's figures and report.md from MLflow.

    python scripts/make_figures.py --experiment NAME [--parent RUN_ID] [--out DIR]
                                   [--tracking-uri URI] [--no-log]

See resnet_exp/analysis/command.py for what is written and where it is logged.
"""

import sys

from resnet_exp.analysis.command import main

if __name__ == "__main__":
    sys.exit(main())
