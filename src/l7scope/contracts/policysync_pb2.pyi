from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALLOWED: _ClassVar[Action]
    DENIED: _ClassVar[Action]
ALLOWED: Action
DENIED: Action

class ReportResult(_message.Message):
    __slots__ = ("successful",)
    SUCCESSFUL_FIELD_NUMBER: _ClassVar[int]
    successful: bool
    def __init__(self, successful: _Optional[bool] = ...) -> None: ...

class Protocol(_message.Message):
    __slots__ = ("number", "name")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    number: int
    name: str
    def __init__(self, number: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class Statistic(_message.Message):
    __slots__ = ("direction", "relativity", "kind", "action", "value")
    class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        IN: _ClassVar[Statistic.Direction]
        OUT: _ClassVar[Statistic.Direction]
    IN: Statistic.Direction
    OUT: Statistic.Direction
    class Relativity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ABSOLUTE: _ClassVar[Statistic.Relativity]
        DELTA: _ClassVar[Statistic.Relativity]
    ABSOLUTE: Statistic.Relativity
    DELTA: Statistic.Relativity
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PACKETS: _ClassVar[Statistic.Kind]
        BYTES: _ClassVar[Statistic.Kind]
        HTTP_REQUESTS: _ClassVar[Statistic.Kind]
        HTTP_DATA: _ClassVar[Statistic.Kind]
        INGRESS_DATA: _ClassVar[Statistic.Kind]
    PACKETS: Statistic.Kind
    BYTES: Statistic.Kind
    HTTP_REQUESTS: Statistic.Kind
    HTTP_DATA: Statistic.Kind
    INGRESS_DATA: Statistic.Kind
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    RELATIVITY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    direction: Statistic.Direction
    relativity: Statistic.Relativity
    kind: Statistic.Kind
    action: Action
    value: int
    def __init__(self, direction: _Optional[_Union[Statistic.Direction, str]] = ..., relativity: _Optional[_Union[Statistic.Relativity, str]] = ..., kind: _Optional[_Union[Statistic.Kind, str]] = ..., action: _Optional[_Union[Action, str]] = ..., value: _Optional[int] = ...) -> None: ...

class DataplaneStats(_message.Message):
    __slots__ = ("src_ip", "dst_ip", "src_port", "dst_port", "protocol", "stats", "action", "http_data", "reporter_node", "request_details")
    SRC_IP_FIELD_NUMBER: _ClassVar[int]
    DST_IP_FIELD_NUMBER: _ClassVar[int]
    SRC_PORT_FIELD_NUMBER: _ClassVar[int]
    DST_PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    HTTP_DATA_FIELD_NUMBER: _ClassVar[int]
    REPORTER_NODE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_DETAILS_FIELD_NUMBER: _ClassVar[int]
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    protocol: Protocol
    stats: _containers.RepeatedCompositeFieldContainer[Statistic]
    action: Action
    http_data: _containers.RepeatedCompositeFieldContainer[HTTPData]
    reporter_node: str
    request_details: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, src_ip: _Optional[str] = ..., dst_ip: _Optional[str] = ..., src_port: _Optional[int] = ..., dst_port: _Optional[int] = ..., protocol: _Optional[_Union[Protocol, _Mapping]] = ..., stats: _Optional[_Iterable[_Union[Statistic, _Mapping]]] = ..., action: _Optional[_Union[Action, str]] = ..., http_data: _Optional[_Iterable[_Union[HTTPData, _Mapping]]] = ..., reporter_node: _Optional[str] = ..., request_details: _Optional[_Iterable[bytes]] = ...) -> None: ...

class HTTPData(_message.Message):
    __slots__ = ("x_forwarded_for", "x_real_ip", "duration", "response_code", "bytes_sent", "bytes_received", "user_agent", "request_path", "request_method", "count", "domain", "duration_max", "type", "latency", "route_name", "gateway_name", "protocol", "collector_name", "collector_type", "host", "upstream_host", "duration_us_sum", "duration_us_max", "duration_hist", "tls_sni", "response_flags", "grpc_status", "bytes_sent_total", "bytes_received_total")
    class DurationHistEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    X_FORWARDED_FOR_FIELD_NUMBER: _ClassVar[int]
    X_REAL_IP_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_PATH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_METHOD_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DURATION_MAX_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    COLLECTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    COLLECTOR_TYPE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_HOST_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_SUM_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_MAX_FIELD_NUMBER: _ClassVar[int]
    DURATION_HIST_FIELD_NUMBER: _ClassVar[int]
    TLS_SNI_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FLAGS_FIELD_NUMBER: _ClassVar[int]
    GRPC_STATUS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    x_forwarded_for: str
    x_real_ip: str
    duration: int
    response_code: int
    bytes_sent: int
    bytes_received: int
    user_agent: str
    request_path: str
    request_method: str
    count: int
    domain: str
    duration_max: int
    type: str
    latency: int
    route_name: str
    gateway_name: str
    protocol: str
    collector_name: str
    collector_type: str
    host: str
    upstream_host: str
    duration_us_sum: int
    duration_us_max: int
    duration_hist: _containers.ScalarMap[int, int]
    tls_sni: str
    response_flags: str
    grpc_status: str
    bytes_sent_total: int
    bytes_received_total: int
    def __init__(self, x_forwarded_for: _Optional[str] = ..., x_real_ip: _Optional[str] = ..., duration: _Optional[int] = ..., response_code: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., bytes_received: _Optional[int] = ..., user_agent: _Optional[str] = ..., request_path: _Optional[str] = ..., request_method: _Optional[str] = ..., count: _Optional[int] = ..., domain: _Optional[str] = ..., duration_max: _Optional[int] = ..., type: _Optional[str] = ..., latency: _Optional[int] = ..., route_name: _Optional[str] = ..., gateway_name: _Optional[str] = ..., protocol: _Optional[str] = ..., collector_name: _Optional[str] = ..., collector_type: _Optional[str] = ..., host: _Optional[str] = ..., upstream_host: _Optional[str] = ..., duration_us_sum: _Optional[int] = ..., duration_us_max: _Optional[int] = ..., duration_hist: _Optional[_Mapping[int, int]] = ..., tls_sni: _Optional[str] = ..., response_flags: _Optional[str] = ..., grpc_status: _Optional[str] = ..., bytes_sent_total: _Optional[int] = ..., bytes_received_total: _Optional[int] = ...) -> None: ...
