from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WireDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WIRE_FP32: _ClassVar[WireDtype]
    WIRE_FP16: _ClassVar[WireDtype]
    WIRE_INT8: _ClassVar[WireDtype]
WIRE_FP32: WireDtype
WIRE_FP16: WireDtype
WIRE_INT8: WireDtype

class TableIds(_message.Message):
    __slots__ = ("table", "ids")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    table: str
    ids: bytes
    def __init__(self, table: _Optional[str] = ..., ids: _Optional[bytes] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("tables", "version", "wire_dtype")
    TABLES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WIRE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[TableIds]
    version: int
    wire_dtype: WireDtype
    def __init__(self, tables: _Optional[_Iterable[_Union[TableIds, _Mapping]]] = ..., version: _Optional[int] = ..., wire_dtype: _Optional[_Union[WireDtype, str]] = ...) -> None: ...

class TableValues(_message.Message):
    __slots__ = ("table", "dim", "rows", "missing")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    table: str
    dim: int
    rows: int
    missing: int
    def __init__(self, table: _Optional[str] = ..., dim: _Optional[int] = ..., rows: _Optional[int] = ..., missing: _Optional[int] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("version", "values", "tables", "wire_dtype", "scales", "dense_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    WIRE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    DENSE_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    values: bytes
    tables: _containers.RepeatedCompositeFieldContainer[TableValues]
    wire_dtype: WireDtype
    scales: bytes
    dense_version: int
    def __init__(self, version: _Optional[int] = ..., values: _Optional[bytes] = ..., tables: _Optional[_Iterable[_Union[TableValues, _Mapping]]] = ..., wire_dtype: _Optional[_Union[WireDtype, str]] = ..., scales: _Optional[bytes] = ..., dense_version: _Optional[int] = ...) -> None: ...

class ValueChecks(_message.Message):
    __slots__ = ("max_abs_value", "allow_non_finite")
    MAX_ABS_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NON_FINITE_FIELD_NUMBER: _ClassVar[int]
    max_abs_value: float
    allow_non_finite: bool
    def __init__(self, max_abs_value: _Optional[float] = ..., allow_non_finite: bool = ...) -> None: ...

class LoadFullRequest(_message.Message):
    __slots__ = ("version", "uri", "checks", "dense_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    DENSE_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    uri: str
    checks: ValueChecks
    dense_version: int
    def __init__(self, version: _Optional[int] = ..., uri: _Optional[str] = ..., checks: _Optional[_Union[ValueChecks, _Mapping]] = ..., dense_version: _Optional[int] = ...) -> None: ...

class ApplyIncrementalRequest(_message.Message):
    __slots__ = ("version", "base_version", "uri", "checks", "dense_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    DENSE_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    base_version: int
    uri: str
    checks: ValueChecks
    dense_version: int
    def __init__(self, version: _Optional[int] = ..., base_version: _Optional[int] = ..., uri: _Optional[str] = ..., checks: _Optional[_Union[ValueChecks, _Mapping]] = ..., dense_version: _Optional[int] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class AdminReply(_message.Message):
    __slots__ = ("message", "active_version")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    message: str
    active_version: int
    def __init__(self, message: _Optional[str] = ..., active_version: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TableStatus(_message.Message):
    __slots__ = ("name", "dim", "dtype", "rows", "memory_bytes", "overlay_rows")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_ROWS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    dtype: str
    rows: int
    memory_bytes: int
    overlay_rows: int
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., dtype: _Optional[str] = ..., rows: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., overlay_rows: _Optional[int] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("version", "state", "progress", "bytes_loaded", "bytes_total", "tables", "error", "uri", "base_version", "dense_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BYTES_LOADED_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DENSE_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: str
    progress: float
    bytes_loaded: int
    bytes_total: int
    tables: _containers.RepeatedCompositeFieldContainer[TableStatus]
    error: str
    uri: str
    base_version: int
    dense_version: int
    def __init__(self, version: _Optional[int] = ..., state: _Optional[str] = ..., progress: _Optional[float] = ..., bytes_loaded: _Optional[int] = ..., bytes_total: _Optional[int] = ..., tables: _Optional[_Iterable[_Union[TableStatus, _Mapping]]] = ..., error: _Optional[str] = ..., uri: _Optional[str] = ..., base_version: _Optional[int] = ..., dense_version: _Optional[int] = ...) -> None: ...

class RealtimeStatus(_message.Message):
    __slots__ = ("enabled", "topic", "assigned", "lag", "applied", "malformed", "freshness_p50_seconds", "freshness_p99_seconds")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    MALFORMED_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_P99_SECONDS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    topic: str
    assigned: bool
    lag: int
    applied: int
    malformed: int
    freshness_p50_seconds: float
    freshness_p99_seconds: float
    def __init__(self, enabled: bool = ..., topic: _Optional[str] = ..., assigned: bool = ..., lag: _Optional[int] = ..., applied: _Optional[int] = ..., malformed: _Optional[int] = ..., freshness_p50_seconds: _Optional[float] = ..., freshness_p99_seconds: _Optional[float] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("shard_index", "shard_count", "active_version", "versions", "realtime", "memory_bytes")
    SHARD_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    REALTIME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    shard_index: int
    shard_count: int
    active_version: int
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    realtime: RealtimeStatus
    memory_bytes: int
    def __init__(self, shard_index: _Optional[int] = ..., shard_count: _Optional[int] = ..., active_version: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., realtime: _Optional[_Union[RealtimeStatus, _Mapping]] = ..., memory_bytes: _Optional[int] = ...) -> None: ...
