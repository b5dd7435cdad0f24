"""Configuration: /etc/liveupd/liveupd.conf plus drop-ins, validated by liveupd.schema."""

from liveupd.config.load import load_config
from liveupd.config.model import Config, DeviceSelector

__all__ = ["Config", "DeviceSelector", "load_config"]
