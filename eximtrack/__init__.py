"""eximtrack: Track Delivery for a fleet of Exim servers. The console script lives in cli.py."""

__version__ = "0.1.0"
