package flinkjemalloc;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichFlatMapFunction;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.connector.source.lib.NumberSequenceSource;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.KeyedStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.util.Collector;
import org.apache.flink.util.ParameterTool;

/**
 * The e2e job for Flink 2.x, which removed the APIs the 1.x job uses (`RestartStrategies`,
 * `setStateBackend`, `addSource`): keyed RocksDB state written at a steady rate, and a
 * failure injected every {@code --fail-every-ms} milliseconds. The state backend and the
 * restart strategy come from the configuration ({@code state.backend.type: rocksdb},
 * {@code restart-strategy.type: fixed-delay}), so each failure closes and reopens RocksDB
 * inside the same TaskManager JVM.
 *
 * <p>Arguments: {@code --keys N} (distinct keys), {@code --value-bytes N} (state value
 * size), {@code --records-per-second N}, {@code --fail-every-ms N} (0: never),
 * {@code --async-state true} (the state read and written through the async State V2 API:
 * {@code keyBy().enableAsyncState()} and a v2 {@code ValueState}, the path of FLINK-40327 on
 * the ForSt backend).
 */
public final class RocksDbRestartJob {

    private RocksDbRestartJob() {}

    public static void main(String[] args) throws Exception {
        ParameterTool params = ParameterTool.fromArgs(args);
        long keys = params.getLong("keys", 100_000L);
        int valueBytes = params.getInt("value-bytes", 256);
        long rate = params.getLong("records-per-second", 20_000L);
        long failEveryMs = params.getLong("fail-every-ms", 20_000L);
        boolean asyncState = params.getBoolean("async-state", false);

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        KeyedStream<Long, Long> keyed =
                env.fromSource(
                                new NumberSequenceSource(0, Long.MAX_VALUE),
                                WatermarkStrategy.noWatermarks(),
                                "keys")
                        .map(new Throttle(keys, rate))
                        .name("throttle")
                        .keyBy(new Identity());
        DataStream<Long> written =
                asyncState
                        ? keyed.enableAsyncState()
                                .flatMap(new AsyncStateWriter(valueBytes, failEveryMs))
                                .name("async-state")
                        : keyed.flatMap(new StateWriter(valueBytes, failEveryMs))
                                .name("rocksdb-state");
        written.sinkTo(new DiscardingSink<>()).name("discard");
        env.execute("rocksdb-restart-growth");
    }

    /** Keys are their own key (a class, not a lambda: no type-erasure surprises). */
    static final class Identity implements KeySelector<Long, Long> {
        private static final long serialVersionUID = 1L;

        @Override
        public Long getKey(Long value) {
            return value;
        }
    }

    /** The sequence, folded onto {@code keys} keys, at most {@code rate} records a second. */
    static final class Throttle extends RichMapFunction<Long, Long> {
        private final long keys;
        private final long rate;
        private transient long windowStart;
        private transient long inWindow;

        Throttle(long keys, long rate) {
            this.keys = keys;
            this.rate = rate;
        }

        @Override
        public void open(OpenContext context) {
            windowStart = System.nanoTime();
            inWindow = 0;
        }

        @Override
        public Long map(Long n) throws Exception {
            long perTenMs = Math.max(1, rate / 100);
            if (++inWindow >= perTenMs) {
                long sleepMs = 10 - (System.nanoTime() - windowStart) / 1_000_000;
                if (sleepMs > 0) {
                    Thread.sleep(sleepMs);
                }
                windowStart = System.nanoTime();
                inWindow = 0;
            }
            return n % keys;
        }
    }

    /**
     * What both writers share: the next value of a key (its first byte counts the writes),
     * and the failure thrown once the configured time has passed since the task opened.
     */
    abstract static class Writer extends RichFlatMapFunction<Long, Long> {
        private final int valueBytes;
        private final long failEveryMs;
        private transient long openedAt;

        Writer(int valueBytes, long failEveryMs) {
            this.valueBytes = valueBytes;
            this.failEveryMs = failEveryMs;
        }

        void opened() {
            openedAt = System.currentTimeMillis();
        }

        byte[] next(byte[] previous) {
            byte[] value = new byte[valueBytes];
            value[0] = (byte) (previous == null ? 1 : previous[0] + 1);
            return value;
        }

        void failIfDue() {
            if (failEveryMs > 0 && System.currentTimeMillis() - openedAt > failEveryMs) {
                throw new InjectedFailure(failEveryMs);
            }
        }
    }

    /** Writes a value per key into RocksDB and throws after the configured time. */
    static final class StateWriter extends Writer {
        private transient ValueState<byte[]> state;

        StateWriter(int valueBytes, long failEveryMs) {
            super(valueBytes, failEveryMs);
        }

        @Override
        public void open(OpenContext context) {
            state = getRuntimeContext().getState(new ValueStateDescriptor<>("value", byte[].class));
            opened();
        }

        @Override
        public void flatMap(Long key, Collector<Long> out) throws Exception {
            state.update(next(state.value()));
            failIfDue();
            out.collect(key);
        }
    }

    /**
     * {@link StateWriter} through the async State V2 API: the value is read with {@code
     * asyncValue()} and written in its continuation, so reads go through the state
     * backend's batched multi-get.
     */
    static final class AsyncStateWriter extends Writer {
        private transient org.apache.flink.api.common.state.v2.ValueState<byte[]> state;

        AsyncStateWriter(int valueBytes, long failEveryMs) {
            super(valueBytes, failEveryMs);
        }

        @Override
        public void open(OpenContext context) {
            state =
                    getRuntimeContext()
                            .getState(
                                    new org.apache.flink.api.common.state.v2.ValueStateDescriptor<>(
                                            "value", byte[].class));
            opened();
        }

        @Override
        public void flatMap(Long key, Collector<Long> out) {
            failIfDue();
            state.asyncValue().thenAccept(previous -> state.asyncUpdate(next(previous)));
            out.collect(key);
        }
    }

    /** The injected failure, recognisable in the job's exception history. */
    static final class InjectedFailure extends RuntimeException {
        private static final long serialVersionUID = 1L;

        InjectedFailure(long afterMs) {
            super("flink-jemalloc: injected failure after " + afterMs + " ms (forces a restart)");
        }
    }
}
