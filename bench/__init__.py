"""Load generators and reports. Never imported by tests."""
