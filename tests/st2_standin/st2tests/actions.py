"""Base class of Python action tests, as in ``st2tests.actions``."""

from st2common.runners.utils import get_action_class_instance
from st2tests.mocks.action import MockActionService
from st2tests.mocks.action import MockActionWrapper
from st2tests.pack_resource import BasePackResourceTestCase

__all__ = ["BaseActionTestCase"]


class BaseActionTestCase(BasePackResourceTestCase):
    """Set ``action_cls``; ``get_action_instance(config)`` builds it with an in-memory service.

    As in StackStorm, the datastore namespace is ``tests.<ClassName>:``.
    """

    action_cls = None

    def setUp(self):
        super(BaseActionTestCase, self).setUp()
        class_name = self.action_cls.__name__
        action_wrapper = MockActionWrapper(pack="tests", class_name=class_name)
        self.action_service = MockActionService(action_wrapper=action_wrapper)

    def get_action_instance(self, config=None):
        return get_action_class_instance(
            action_cls=self.action_cls, config=config, action_service=self.action_service
        )
