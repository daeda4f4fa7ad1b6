#!/usr/bin/env python
"""Train memagent agents and baselines (RL Baselines3 Zoo conventions).

python train.py                                   # the main job: DNC agent vs a memoryless baseline
python train.py --algo ppo_lstm --env memagent/NonStationaryRegressionReward-v0 -n 20000
python train.py bench benchmarks/suites/quick.yml # a benchmark sweep
python train.py --help
"""

import sys

from memagent.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
