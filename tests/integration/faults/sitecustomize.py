"""A test-only fault for the stream worker, loaded by Python at start when this folder is on its PYTHONPATH and
$EXIMTRACK_TEST_STUCK_PARTITION is set (tests/integration/test_pipeline.py).

Once the worker's injected pause ($EXIMTRACK_TEST_PAUSE_PARTITION_AFTER) stopped fetching a raw-lines
partition, faust's consumer no longer resumes or seeks that partition, so the stall watchdog's in-place fetch
cannot help and its second remedy (exit for a restart) is what the test sees. Nothing here runs in a
deployment: the variable is set by that test only."""

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
