"""Test-only faults for the stream worker, loaded by Python at start when this folder is on its PYTHONPATH and
their variable is set (tests/integration/test_pipeline.py). Nothing here runs in a deployment: the variables
are set by those tests only.

$EXIMTRACK_TEST_SKIP_RECORDS=A-B[,C-D…]: faust's consumer never hands the agent the raw-lines records at offsets
A <= offset < B (and C..D …). From 0: what a worker that joined a group under load did to a partition nobody
had handled yet (it started 45-49 records in, and faust committed past them). Mid-partition: the record a
worker SIGKILLed and replaced skipped. RecordGaps must read them back.

$EXIMTRACK_TEST_PAUSE_PARTITION_AFTER=N: after handing the agent N raw-lines records, faust's consumer stops
fetching the partition of the last one (`pause_partitions`): the state faust-streaming#629 leaves a partition
in, which the stall watchdog must heal.

$EXIMTRACK_TEST_STUCK_PARTITION: once the injected pause ($EXIMTRACK_TEST_PAUSE_PARTITION_AFTER) stopped fetching a raw-lines
partition, faust's consumer no longer resumes or seeks that partition, so the stall watchdog's in-place fetch
cannot help and its second remedy (exit for a restart) is what the test sees.

$EXIMTRACK_TEST_FAIL_SEND_AFTER=N: the producer's Nth produce request that carries an events record is not sent;
half a second later its batches fail with RequestTimedOutError, as aiokafka fails them when a leader left the
request unanswered for the request timeout (the batch expired meanwhile, so it is not retried). The send
guard (stream/send_guard.py) must end the worker before an offset commit passes the lost records."""

import os

if os.environ.get("EXIMTRACK_TEST_STUCK_PARTITION"):
    from faust.transport import consumer as _consumer

    stuck: set = set()
    pause = _consumer.Consumer.pause_partitions
    resume = _consumer.Consumer.resume_partitions
    seek_wait = _consumer.ThreadDelegateConsumer.seek_wait

    def pause_partitions(self, tps):
        tps = set(tps)
        if not self.app.rebalancing:  # the worker's injected pause (faust pauses everything in a rebalance)
            stuck.update(tp for tp in tps if tp.topic.endswith("raw-lines"))
        return pause(self, tps)

    def resume_partitions(self, tps):
        return resume(self, {tp for tp in tps if tp not in stuck})

    async def stuck_seek_wait(self, partitions):
        return await seek_wait(self, {tp: offset for tp, offset in partitions.items() if tp not in stuck})

    _consumer.Consumer.pause_partitions = pause_partitions
    _consumer.Consumer.resume_partitions = resume_partitions
    _consumer.ThreadDelegateConsumer.seek_wait = stuck_seek_wait

if os.environ.get("EXIMTRACK_TEST_SKIP_RECORDS"):
    from faust.transport import consumer as _consumer

    skipped = [tuple(map(int, r.split("-"))) for r in os.environ["EXIMTRACK_TEST_SKIP_RECORDS"].split(",")]
    getmany = _consumer.Consumer.getmany

    async def skipping_getmany(self, timeout):
        async for tp, message in getmany(self, timeout):
            if not (tp.topic.endswith("raw-lines") and any(a <= message.offset < b for a, b in skipped)):
                yield tp, message

    _consumer.Consumer.getmany = skipping_getmany

if os.environ.get("EXIMTRACK_TEST_PAUSE_PARTITION_AFTER"):
    import logging

    from faust.transport import consumer as _consumer

    pause_after = int(os.environ["EXIMTRACK_TEST_PAUSE_PARTITION_AFTER"])
    handed = [0]
    unpaused_getmany = _consumer.Consumer.getmany

    async def pausing_getmany(self, timeout):
        async for tp, message in unpaused_getmany(self, timeout):
            yield tp, message
            if tp.topic.endswith("raw-lines"):
                handed[0] += 1
                if handed[0] == pause_after:
                    logging.getLogger("eximtrack.stream").warning(
                        "EXIMTRACK_TEST_PAUSE_PARTITION_AFTER: no longer fetching %s[%d] after offset %d",
                        tp.topic, tp.partition, message.offset,
                    )  # fmt: skip
                    self.pause_partitions({tp})

    _consumer.Consumer.getmany = pausing_getmany

if os.environ.get("EXIMTRACK_TEST_FAIL_SEND_AFTER"):
    import asyncio
    import logging

    from aiokafka.errors import RequestTimedOutError
    from aiokafka.producer import sender as _sender

    fail_after = int(os.environ["EXIMTRACK_TEST_FAIL_SEND_AFTER"])
    produced = [0]
    send_produce = _sender.SendProduceReqHandler.do

    async def failing_do(self, node_id):
        if any(tp.topic.endswith(".events") for tp in self._batches):
            produced[0] += 1
            if produced[0] == fail_after:
                logging.getLogger("eximtrack.stream").warning(
                    "EXIMTRACK_TEST_FAIL_SEND_AFTER: produce request %d to node %s fails: %s",
                    fail_after, node_id, sorted(f"{tp.topic}[{tp.partition}]" for tp in self._batches),
                )  # fmt: skip
                await asyncio.sleep(0.5)
                for batch in self._batches.values():
                    batch.failure(exception=RequestTimedOutError())
                return
        return await send_produce(self, node_id)

    _sender.SendProduceReqHandler.do = failing_do
