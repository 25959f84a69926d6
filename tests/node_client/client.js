#!/usr/bin/env node
// A real OpenTelemetry JS SDK client for the sidecar tests (tests/test_sidecar_node_clients.py).
//
//   node client.js --signal traces|metrics|logs --endpoint URL
//                  --transport http/protobuf|http/json|grpc --compression none|gzip
//                  --plan JSON [--run ID] [--partial-ok 1] [--temporality T]
//
// --run ID is put on the resource as codebook.test.run, so a test can pick its own spans out
// of what the sidecar forwards.
//
// traces: the plan is a list of span specs
//   {name, count, attrs, status, statusMessage, child, linkRoot, events, zeroSpanId}.
//   Every span is started and ended through BasicTracerProvider + BatchSpanProcessor and the
//   official OTLP span exporter for the transport. "child": true makes it a child of one root
//   span named "root" (ended last, no attributes); "linkRoot": true links it to that span;
//   "events" ([{name, attrs}]) are added to it; "zeroSpanId": true gives it an all-zero
//   (invalid) span id. attrs are passed as given: a JSON number is a JS number (the SDK
//   encodes integers as intValue, others as doubleValue). "status": "ok" | "error" sets the
//   span status (default: left UNSET). After forceFlush and shutdown one JSON line is
//   printed, {"event": "done", "spans": [...], "partialSuccess": [...]}: every span an export
//   reported as delivered, as {name, traceId, spanId, parentSpanId, start, end, attrs,
//   events, links} (times in decimal nanoseconds), and the partial-success replies.
// metrics: the plan is a list of steps, each a list of {instrument, kind, value, attrs}
//   (kind: "counter" (default), "int_counter", "histogram"). Each step records its values
//   and force-flushes a PeriodicExportingMetricReader whose exporter is the official OTLP
//   metric exporter for the transport (--temporality cumulative, the default, or delta),
//   then prints {"event": "flushed", "step": i}; before the next step it waits for a line
//   on stdin.
// logs: the plan is a list of record specs {body, severity, severityText, attrs, count, eventName}.
//   Every record is emitted through LoggerProvider + BatchLogRecordProcessor and the official
//   OTLP log exporter for the transport ("severity": a SeverityNumber, default 13 = WARN).
//   After forceFlush and shutdown one JSON line is printed, {"event": "done", "logs": [...],
//   "partialSuccess": [...]}: every record an export reported as delivered, as {body,
//   severity, attrs}.
//
// Any failed export, any error or warning from the SDK's diagnostic logger and any error
// reaching the global error handler is fatal: the failures are printed to stderr and the
// exit status is 1. Only the endpoint given is contacted.
'use strict';

const { diag, DiagLogLevel, trace, context, SpanStatusCode } = require('@opentelemetry/api');
const { ExportResultCode, setGlobalErrorHandler } = require('@opentelemetry/core');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const {
  BasicTracerProvider,
  BatchSpanProcessor,
  RandomIdGenerator,
} = require('@opentelemetry/sdk-trace-base');
const {
  MeterProvider,
  PeriodicExportingMetricReader,
  AggregationTemporality,
} = require('@opentelemetry/sdk-metrics');

const { LoggerProvider, BatchLogRecordProcessor } = require('@opentelemetry/sdk-logs');

const failures = [];
// Partial-success replies, which the exporters report as a diag warning; fatal unless the
// command line says --partial-ok 1 (then they are printed with the result).
const PARTIAL = 'Received Partial Success response:';
const partials = [];

function fail(what) {
  failures.push(String(what));
}

function warn(args) {
  if (args.length === 2 && args[0] === PARTIAL) partials.push(JSON.parse(args[1]));
  else fail(`diag warn: ${args.join(' ')}`);
}

diag.setLogger(
  {
    error: (...args) => fail(`diag error: ${args.join(' ')}`),
    warn: (...args) => warn(args),
    info: () => {},
    debug: () => {},
    verbose: () => {},
  },
  DiagLogLevel.WARN,
);
setGlobalErrorHandler((err) => fail(`global error handler: ${err && err.stack ? err.stack : err}`));

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i];
    if (!key.startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`bad arguments near ${JSON.stringify(key)}`);
    }
    out[key.slice(2)] = argv[i + 1];
  }
  for (const need of ['signal', 'endpoint', 'transport', 'plan']) {
    if (!(need in out)) throw new Error(`--${need} is required`);
  }
  out.compression = out.compression || 'none';
  if (!['none', 'gzip'].includes(out.compression)) {
    throw new Error(`--compression must be none or gzip, not ${out.compression}`);
  }
  out.plan = JSON.parse(out.plan);
  out.partialOk = out['partial-ok'] === '1';
  out.temporality = out.temporality || 'cumulative';
  if (!['cumulative', 'delta'].includes(out.temporality)) {
    throw new Error(`--temporality must be cumulative or delta, not ${out.temporality}`);
  }
  return out;
}

const TRACE_EXPORTERS = {
  'http/protobuf': ['@opentelemetry/exporter-trace-otlp-proto', '/v1/traces'],
  'http/json': ['@opentelemetry/exporter-trace-otlp-http', '/v1/traces'],
  grpc: ['@opentelemetry/exporter-trace-otlp-grpc', ''],
};
const METRIC_EXPORTERS = {
  'http/protobuf': ['@opentelemetry/exporter-metrics-otlp-proto', '/v1/metrics'],
  'http/json': ['@opentelemetry/exporter-metrics-otlp-http', '/v1/metrics'],
  grpc: ['@opentelemetry/exporter-metrics-otlp-grpc', ''],
};

const LOG_EXPORTERS = {
  'http/protobuf': ['@opentelemetry/exporter-logs-otlp-proto', '/v1/logs'],
  'http/json': ['@opentelemetry/exporter-logs-otlp-http', '/v1/logs'],
  grpc: ['@opentelemetry/exporter-logs-otlp-grpc', ''],
};

function makeExporter(table, name, args, extra) {
  const entry = table[args.transport];
  if (entry === undefined) throw new Error(`unknown transport ${args.transport}`);
  const [pkg, path] = entry;
  const Exporter = require(pkg)[name];
  return new Exporter({
    url: `${args.endpoint}${path}`,
    compression: args.compression,
    timeoutMillis: 10000,
    ...extra,
  });
}

// Records every export result: failures are fatal, delivered items are reported.
function checked(inner, delivered) {
  const wrapper = Object.create(inner);
  wrapper.export = (items, done) => {
    inner.export(items, (result) => {
      if (result.code !== ExportResultCode.SUCCESS) {
        fail(`export failed: ${result.error && result.error.stack ? result.error.stack : result.error}`);
      } else if (delivered) {
        delivered.push(...items);
      }
      done(result);
    });
  };
  return wrapper;
}

function resource(args) {
  return resourceFromAttributes({
    'service.name': 'codebook-node-client',
    'codebook.test.transport': args.transport,
    'codebook.test.compression': args.compression,
    'codebook.test.run': args.run || '',
  });
}

// An HrTime [seconds, nanoseconds] as decimal nanoseconds (exact: BigInt).
function nanos([seconds, ns]) {
  return (BigInt(seconds) * 1000000000n + BigInt(ns)).toString();
}

const STATUS = { ok: SpanStatusCode.OK, error: SpanStatusCode.ERROR };

// Random ids, or an all-zero span id (invalid in OTLP) while zeroSpanIds is set.
const ids = new RandomIdGenerator();
let zeroSpanIds = false;
const idGenerator = {
  generateTraceId: () => ids.generateTraceId(),
  generateSpanId: () => (zeroSpanIds ? '0000000000000000' : ids.generateSpanId()),
};

async function sendTraces(args) {
  const delivered = [];
  const exporter = checked(makeExporter(TRACE_EXPORTERS, 'OTLPTraceExporter', args), delivered);
  const provider = new BasicTracerProvider({
    resource: resource(args),
    idGenerator,
    spanProcessors: [
      new BatchSpanProcessor(exporter, { maxExportBatchSize: 64, scheduledDelayMillis: 60000 }),
    ],
  });
  const tracer = provider.getTracer('codebook-node-test', '1.0.0');
  let root = null;
  const rootSpan = () => {
    if (root === null) root = tracer.startSpan('root');
    return root;
  };
  for (const spec of args.plan) {
    let ctx = context.active();
    if (spec.child) ctx = trace.setSpan(ctx, rootSpan());
    const links = spec.linkRoot
      ? [{ context: rootSpan().spanContext(), attributes: { 'link.to': 'root' } }]
      : [];
    for (let i = 0; i < (spec.count === undefined ? 1 : spec.count); i++) {
      zeroSpanIds = Boolean(spec.zeroSpanId);
      const span = tracer.startSpan(spec.name, { attributes: spec.attrs || {}, links }, ctx);
      zeroSpanIds = false;
      for (const event of spec.events || []) span.addEvent(event.name, event.attrs || {});
      if (spec.status) span.setStatus({ code: STATUS[spec.status], message: spec.statusMessage });
      span.end();
    }
  }
  if (root !== null) root.end();
  await provider.forceFlush();
  await provider.shutdown();
  const spans = delivered.map((s) => ({
    name: s.name,
    traceId: s.spanContext().traceId,
    spanId: s.spanContext().spanId,
    parentSpanId: (s.parentSpanContext && s.parentSpanContext.spanId) || '',
    start: nanos(s.startTime),
    end: nanos(s.endTime),
    attrs: s.attributes,
    events: s.events.map((e) => ({ name: e.name, time: nanos(e.time), attrs: e.attributes || {} })),
    links: s.links.map((l) => ({
      traceId: l.context.traceId,
      spanId: l.context.spanId,
      attrs: l.attributes || {},
    })),
  }));
  process.stdout.write(`${JSON.stringify({ event: 'done', spans, partialSuccess: partials })}\n`);
}

function nextLine() {
  return new Promise((resolve) => {
    let buf = '';
    const onData = (chunk) => {
      buf += chunk;
      if (buf.includes('\n')) {
        process.stdin.off('data', onData);
        process.stdin.off('end', onData);
        process.stdin.pause();
        resolve(buf);
      }
    };
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', onData);
    process.stdin.on('end', () => resolve(buf));
    process.stdin.resume();
  });
}

async function sendMetrics(args) {
  const exporter = checked(
    makeExporter(METRIC_EXPORTERS, 'OTLPMetricExporter', args, {
      temporalityPreference:
        args.temporality === 'delta'
          ? AggregationTemporality.DELTA
          : AggregationTemporality.CUMULATIVE,
    }),
    null,
  );
  const reader = new PeriodicExportingMetricReader({
    exporter,
    exportIntervalMillis: 3600000,
    exportTimeoutMillis: 15000,
  });
  const provider = new MeterProvider({ resource: resource(args), readers: [reader] });
  const meter = provider.getMeter('codebook-node-test', '1.0.0');
  const instruments = new Map();
  const instrument = (name, kind) => {
    const key = `${kind}:${name}`;
    if (!instruments.has(key)) {
      if (kind === 'histogram') instruments.set(key, meter.createHistogram(name));
      else if (kind === 'int_counter') {
        instruments.set(key, meter.createCounter(name, { valueType: 1 /* ValueType.INT */ }));
      } else instruments.set(key, meter.createCounter(name));
    }
    return instruments.get(key);
  };
  for (let step = 0; step < args.plan.length; step++) {
    if (step > 0) await nextLine();
    for (const point of args.plan[step]) {
      const kind = point.kind || 'counter';
      const inst = instrument(point.instrument, kind);
      if (kind === 'histogram') inst.record(point.value, point.attrs || {});
      else inst.add(point.value, point.attrs || {});
    }
    await reader.forceFlush();
    if (failures.length) break;
    process.stdout.write(`${JSON.stringify({ event: 'flushed', step })}\n`);
  }
  await provider.shutdown();
}

async function sendLogs(args) {
  const delivered = [];
  const exporter = checked(makeExporter(LOG_EXPORTERS, 'OTLPLogExporter', args), delivered);
  const provider = new LoggerProvider({
    resource: resource(args),
    processors: [
      // This SDK's processors take one options object (the exporter is one of them).
      new BatchLogRecordProcessor({ exporter, maxExportBatchSize: 64, scheduledDelayMillis: 60000 }),
    ],
  });
  const logger = provider.getLogger('codebook-node-test', '1.0.0');
  for (const spec of args.plan) {
    for (let i = 0; i < (spec.count === undefined ? 1 : spec.count); i++) {
      logger.emit({
        body: spec.body,
        severityNumber: spec.severity === undefined ? 13 : spec.severity,
        severityText: spec.severityText,
        attributes: spec.attrs || {},
        eventName: spec.eventName,
      });
    }
  }
  await provider.forceFlush();
  await provider.shutdown();
  const logs = delivered.map((r) => ({
    body: r.body,
    severity: r.severityNumber,
    attrs: r.attributes,
  }));
  process.stdout.write(`${JSON.stringify({ event: 'done', logs, partialSuccess: partials })}\n`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.signal === 'traces') await sendTraces(args);
  else if (args.signal === 'metrics') await sendMetrics(args);
  else if (args.signal === 'logs') await sendLogs(args);
  else throw new Error(`unknown signal ${args.signal}`);
  if (partials.length && !args.partialOk) fail(`partial success: ${JSON.stringify(partials)}`);
}

main().then(
  () => {
    if (failures.length) {
      process.stderr.write(`${failures.join('\n')}\n`);
      process.exit(1);
    }
    process.exit(0);
  },
  (err) => {
    process.stderr.write(`${failures.join('\n')}\nfatal: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  },
);
