"""Reading event logs from other tools: XES and CSV/Parquet tables into DataFrames."""

from eventador.io.importing import find_column, import_dataframe, locate_row, read_event_log, read_xes

__all__ = ["find_column", "import_dataframe", "locate_row", "read_event_log", "read_xes"]
