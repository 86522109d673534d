import pytest

from poc.ops.logs import StationPrefix
from poc.stations.current import CURRENT_STATION


@pytest.fixture
def named_lines(caplog):
    """caplog, its lines tagged with their station as `run --stations` tags the log's."""
    prefix = StationPrefix(CURRENT_STATION)
    caplog.handler.addFilter(prefix)
    yield caplog
    caplog.handler.removeFilter(prefix)  # the handler outlives the test
