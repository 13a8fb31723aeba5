"""The live rollout (its setting, the brake) and the figures per arm that judge it."""
from orchestrator.rollout.arm_figures import (
    CATEGORIES,
    CATEGORY_LABELS,
    DEFAULT_PRICE_PER_MINUTE,
    ArmFigures,
    RolloutView,
    arm_figures,
    rollout_view,
)
from orchestrator.rollout.figure_text import money, percent, seconds, when
from orchestrator.rollout.live import (
    ROLLOUT_SETTING,
    RolloutControl,
    RolloutError,
    RolloutSetting,
    check_percent,
)
from orchestrator.rollout.report_window import ReportInputError, parse_since

__all__ = [
    "CATEGORIES",
    "CATEGORY_LABELS",
    "DEFAULT_PRICE_PER_MINUTE",
    "ROLLOUT_SETTING",
    "ArmFigures",
    "ReportInputError",
    "RolloutControl",
    "RolloutError",
    "RolloutSetting",
    "RolloutView",
    "arm_figures",
    "check_percent",
    "money",
    "parse_since",
    "percent",
    "rollout_view",
    "seconds",
    "when",
]
