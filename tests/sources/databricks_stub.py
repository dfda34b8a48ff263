"""A loopback Databricks SQL warehouse for the tests: the connector's own Thrift service
(TCLIService) over HTTP on 127.0.0.1, checking the Bearer token, answering statements with
Arrow result sets. The SQL the client sends (Databricks dialect, named `:param`s) is
transpiled by sqlglot and run by DuckDB on the tables it was given — so the real
`databricks-sql-connector` talks its real protocol to something that answers like a
warehouse (not Databricks' own SQL engine: semantics are DuckDB's)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import pyarrow as pa
import sqlglot
from databricks.sql.thrift_api.TCLIService import TCLIService, ttypes
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

OK = ttypes.TStatus(statusCode=ttypes.TStatusCode.SUCCESS_STATUS)
TYPES = {
    pa.types.is_boolean: ttypes.TTypeId.BOOLEAN_TYPE,
    pa.types.is_int32: ttypes.TTypeId.INT_TYPE,
    pa.types.is_int64: ttypes.TTypeId.BIGINT_TYPE,
    pa.types.is_float64: ttypes.TTypeId.DOUBLE_TYPE,
    pa.types.is_string: ttypes.TTypeId.STRING_TYPE,
    pa.types.is_large_string: ttypes.TTypeId.STRING_TYPE,
    pa.types.is_date32: ttypes.TTypeId.DATE_TYPE,
    pa.types.is_timestamp: ttypes.TTypeId.TIMESTAMP_TYPE,
    pa.types.is_null: ttypes.TTypeId.NULL_TYPE,
}


def _type_id(t: pa.DataType) -> int:
    for test, tid in TYPES.items():
        if test(t):
            return tid
    return ttypes.TTypeId.STRING_TYPE


def _handle() -> ttypes.THandleIdentifier:
    return ttypes.THandleIdentifier(guid=uuid.uuid4().bytes, secret=uuid.uuid4().bytes)


def _param(p: ttypes.TSparkParameter):
    value = p.value.stringValue if p.value is not None else None
    if value is None:
        return None
    kind = (p.type or "STRING").upper()
    if kind == "DATE":
        return dt.date.fromisoformat(value)
    if kind.startswith("TIMESTAMP"):
        return dt.datetime.fromisoformat(value)
    if kind in ("INT", "BIGINT", "SMALLINT", "TINYINT"):
        return int(value)
    if kind in ("DOUBLE", "FLOAT", "DECIMAL"):
        return float(value)
    return value


class Handler:
    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.lock = threading.Lock()
        self.statements: list[str] = []

    def OpenSession(self, req):  # noqa: N802 - Thrift names
        return ttypes.TOpenSessionResp(
            status=OK, serverProtocolVersion=ttypes.TProtocolVersion.SPARK_CLI_SERVICE_PROTOCOL_V7,
            sessionHandle=ttypes.TSessionHandle(sessionId=_handle()), canUseMultipleCatalogs=True,
        )

    def CloseSession(self, req):  # noqa: N802
        return ttypes.TCloseSessionResp(status=OK)

    def ExecuteStatement(self, req):  # noqa: N802
        self.statements.append(req.statement)
        params = {p.name: _param(p) for p in (req.parameters or [])}
        try:
            sql = sqlglot.transpile(req.statement, read="databricks", write="duckdb")[0]
            with self.lock:
                table = self.con.sql(sql, params=params or None).to_arrow_table()
        except Exception as exc:  # noqa: BLE001 - reported to the client like a warehouse would
            return ttypes.TExecuteStatementResp(status=ttypes.TStatus(
                statusCode=ttypes.TStatusCode.ERROR_STATUS, errorMessage=f"[STUB_ERROR] {exc}".splitlines()[0]))
        op = ttypes.TOperationHandle(operationId=_handle(), operationType=ttypes.TOperationType.EXECUTE_STATEMENT,
                                     hasResultSet=True)
        schema = ttypes.TTableSchema(columns=[
            ttypes.TColumnDesc(columnName=f.name, position=i + 1, typeDesc=ttypes.TTypeDesc(types=[
                ttypes.TTypeEntry(primitiveEntry=ttypes.TPrimitiveTypeEntry(type=_type_id(f.type)))]))
            for i, f in enumerate(table.schema)
        ])
        batches = [ttypes.TSparkArrowBatch(batch=b.serialize().to_pybytes(), rowCount=b.num_rows)
                   for b in table.to_batches() if b.num_rows]
        return ttypes.TExecuteStatementResp(
            status=OK, operationHandle=op,
            directResults=ttypes.TSparkDirectResults(
                operationStatus=ttypes.TGetOperationStatusResp(status=OK,
                                                               operationState=ttypes.TOperationState.FINISHED_STATE),
                resultSetMetadata=ttypes.TGetResultSetMetadataResp(
                    status=OK, schema=schema, resultFormat=ttypes.TSparkRowSetType.ARROW_BASED_SET,
                    arrowSchema=table.schema.serialize().to_pybytes(), lz4Compressed=False),
                resultSet=ttypes.TFetchResultsResp(
                    status=OK, hasMoreRows=False,
                    results=ttypes.TRowSet(startRowOffset=0, rows=[], arrowBatches=batches)),
                closeOperation=ttypes.TCloseOperationResp(status=OK),
            ),
        )

    def GetOperationStatus(self, req):  # noqa: N802
        return ttypes.TGetOperationStatusResp(status=OK, operationState=ttypes.TOperationState.FINISHED_STATE)

    def FetchResults(self, req):  # noqa: N802
        return ttypes.TFetchResultsResp(status=OK, hasMoreRows=False,
                                        results=ttypes.TRowSet(startRowOffset=0, rows=[], arrowBatches=[]))

    def CloseOperation(self, req):  # noqa: N802
        return ttypes.TCloseOperationResp(status=OK)

    def CancelOperation(self, req):  # noqa: N802
        return ttypes.TCancelOperationResp(status=OK)


class Warehouse:
    """`with Warehouse(tables, token) as w:` serves on w.uri until the block ends."""

    def __init__(self, tables: dict, token: str = "dapi-test-token", path: str = "/sql/1.0/warehouses/test"):
        self.con = duckdb.connect()
        for name, df in tables.items():
            self.con.register(f"{name}_frame", df.to_arrow())
            self.con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM "{name}_frame"')
        self.handler = Handler(self.con)
        self.token = token
        self.path = path
        processor = TCLIService.Processor(self.handler)
        outer = self

        class HTTP(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    self.send_response(403)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                itrans = TTransport.TMemoryBuffer(body)
                otrans = TTransport.TMemoryBuffer()
                processor.process(TBinaryProtocol.TBinaryProtocol(itrans), TBinaryProtocol.TBinaryProtocol(otrans))
                data = otrans.getvalue()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-thrift")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), HTTP)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    def __enter__(self) -> "Warehouse":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.con.close()
