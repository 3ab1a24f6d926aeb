"""A consumer written for Debezium, as a user would write one: reads a topic with
confluent_kafka and decodes each JsonConverter record ({schema, payload}) by Kafka Connect's
documented rules, printing one JSON line per record with every column as a SQL-like string.

Rules (Kafka Connect / Debezium documentation):
- org.apache.kafka.connect.data.Decimal: bytes = the unscaled value as a big-endian two's
  complement integer (JsonConverter: base64); value = unscaled * 10^-scale, scale a parameter.
- io.debezium.time.Date: int32 days since 1970-01-01.
- io.debezium.time.MicroTimestamp: int64 microseconds since 1970-01-01T00:00:00 (no zone).

usage: debezium_consumer.py BOOTSTRAP TOPIC EXPECTED_RECORDS TIMEOUT_S
"""
import base64
import datetime
import decimal
import json
import sys
import time
import uuid

from confluent_kafka import Consumer

EPOCH_DATE = datetime.date(1970, 1, 1)
EPOCH = datetime.datetime(1970, 1, 1)


def decode_field(schema, value):
    if value is None:
        return None
    name = schema.get('name')
    if name == 'org.apache.kafka.connect.data.Decimal':
        unscaled = int.from_bytes(base64.b64decode(value), 'big', signed=True)
        scale = int(schema['parameters']['scale'])
        return str(decimal.Decimal(unscaled).scaleb(-scale))
    if name == 'io.debezium.time.Date':
        return (EPOCH_DATE + datetime.timedelta(days=value)).isoformat()
    if name == 'io.debezium.time.MicroTimestamp':
        return (EPOCH + datetime.timedelta(microseconds=value)).isoformat(' ')
    return str(value)


def decode_struct(schema, payload):
    if payload is None:
        return None
    fields = {f['field']: f for f in schema['fields']}
    return {k: decode_field(fields[k], v) for k, v in payload.items()}


def main():
    bootstrap, topic, expected, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    c = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'dbz-' + uuid.uuid4().hex,
                  'auto.offset.reset': 'earliest', 'enable.auto.commit': False, 'log_level': 3})
    c.subscribe([topic])
    records = []
    deadline = time.time() + timeout
    while len(records) < expected and time.time() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            raise SystemExit('consume error: ' + str(msg.error()))
        key = json.loads(msg.key())
        headers = {k: json.loads(v) for k, v in (msg.headers() or [])
                   if k.startswith('__debezium')}
        out = {'key': decode_struct(key['schema'], key['payload']), 'headers': headers}
        if msg.value() is None:
            out['tombstone'] = True
        else:
            value = json.loads(msg.value())
            envelope = {f['field']: f for f in value['schema']['fields']}
            payload = value['payload']
            out['op'] = payload['op']
            out['before'] = decode_struct(envelope['before'], payload['before'])
            out['after'] = decode_struct(envelope['after'], payload['after'])
            out['envelope'] = value['schema']['name']
        records.append(out)
    c.close()
    if len(records) < expected:
        raise SystemExit('timed out after %d of %d records' % (len(records), expected))
    for r in records:
        print(json.dumps(r, sort_keys=True))


if __name__ == '__main__':
    main()
