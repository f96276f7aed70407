"""Helpers of the Python runner, as in ``st2common.runners.utils``."""

import logging
import os

__all__ = [
    "PackConfigDict",
    "get_logger_for_python_runner_action",
    "get_action_class_instance",
]

LOG = logging.getLogger(__name__)

# StackStorm's default ``[system] base_path``.
SYSTEM_BASE_PATH = "/opt/stackstorm"

CONFIG_MISSING_ITEM_ERROR = """
Config for pack "%s" is missing key "%s".
Make sure that the config file exists on disk (%s) and contains that key.

Also make sure you run "st2ctl reload --register-configs" when you add a
config and after every change you make to the config.
"""

# One logger per action name, so repeated instantiation does not duplicate handlers.
LOGGERS = {}


class PackConfigDict(dict):
    """The pack config handed to an action: ``config["missing"]`` raises ``ValueError``."""

    def __init__(self, pack_name, *args):
        super(PackConfigDict, self).__init__(*args)
        self._pack_name = pack_name

    def __getitem__(self, key):
        try:
            value = super(PackConfigDict, self).__getitem__(key)
        except KeyError:
            configs_path = os.path.join(SYSTEM_BASE_PATH, "configs/")
            config_path = os.path.join(configs_path, self._pack_name + ".yaml")
            raise ValueError(CONFIG_MISSING_ITEM_ERROR % (self._pack_name, key, config_path))
        return value

    def __setitem__(self, key, value):
        super(PackConfigDict, self).__setitem__(key, value)


def get_logger_for_python_runner_action(action_name, log_level="debug"):
    """A logger named ``actions.python.<action_name>`` writing to stderr."""
    logger_name = "actions.python.%s" % (action_name)

    if logger_name not in LOGGERS:
        level = getattr(logging, log_level.upper(), logging.DEBUG)
        logger = logging.getLogger(logger_name)

        console = logging.StreamHandler()
        console.setLevel(level)
        console.setFormatter(logging.Formatter("%(name)-12s: %(levelname)-8s %(message)s"))
        logger.addHandler(console)
        logger.setLevel(level)

        LOGGERS[logger_name] = logger

    return LOGGERS[logger_name]


def get_action_class_instance(action_cls, config=None, action_service=None):
    """Instantiate an action class the way the Python runner does."""
    kwargs = {"config": config, "action_service": action_service}

    # StackStorm falls back to late assignment for old actions whose constructor does not
    # take ``action_service``.
    try:
        action_instance = action_cls(**kwargs)
    except TypeError as e:
        if "unexpected keyword argument 'action_service'" not in str(e):
            raise
        action_service = kwargs.pop("action_service", None)
        action_instance = action_cls(**kwargs)
        action_instance.action_service = action_service

    return action_instance
