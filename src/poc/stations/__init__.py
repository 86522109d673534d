"""Stations: many streams in one process, each with its own queue, RTMP URL, avatar and voice,
described by a stations file (`run --stations FILE` or STATIONS_FILE)."""

from poc.stations.file import Station, load_stations, log_secrets, station_queue
from poc.stations.keys import PROCESS_WIDE, SHORT_NAMES

__all__ = ["PROCESS_WIDE", "SHORT_NAMES", "Station", "load_stations", "log_secrets", "station_queue"]
