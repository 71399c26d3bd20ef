"""Conversation intelligence (issue 11): features that plug into the turn pipeline (docs/pipeline.md).

Each feature is its own module and its own contributor/observer; ``build_services`` wires them. Modules:
``mood`` (mood-aware tone), ``interests`` (remembered interests), ``recommend`` (catalogue picks),
``service`` (the hooks). Slot-filling forms live in their own ``forms*`` modules.
"""
