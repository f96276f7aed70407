"""The pack test base classes, importable as in StackStorm:
``from st2tests.base import BaseActionTestCase``."""

from st2tests.action_aliases import BaseActionAliasTestCase
from st2tests.actions import BaseActionTestCase
from st2tests.sensors import BaseSensorTestCase

__all__ = ["BaseActionTestCase", "BaseSensorTestCase", "BaseActionAliasTestCase"]
