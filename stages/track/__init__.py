"""The track stage: tracking, the rule engine and media taps of each camera."""
