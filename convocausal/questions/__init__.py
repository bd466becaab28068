"""The question layer: the method registry, pre-flight, routing and verdicts of registered questions.

``registry.py`` declares every method once; ``preflight.py`` holds the checks that run before a
method; ``answer.py`` walks one question through pre-flight, its method and the check catalogue.
Imports ``methods``, ``checks`` and ``configs``; never Dagster.
"""
