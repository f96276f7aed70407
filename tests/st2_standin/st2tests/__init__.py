"""Stand-in for StackStorm's ``st2tests`` (the pack test base classes and their mocks)."""
