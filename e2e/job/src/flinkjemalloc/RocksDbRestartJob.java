package flinkjemalloc;

import org.apache.flink.api.common.functions.RichFlatMapFunction;
import org.apache.flink.api.common.restartstrategy.RestartStrategies;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.time.Time;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.java.utils.ParameterTool;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.DiscardingSink;
import org.apache.flink.streaming.api.functions.source.RichParallelSourceFunction;
import org.apache.flink.util.Collector;

/**
 * Keyed RocksDB state written at a steady rate, and a failure injected every
 * {@code --fail-every-ms} milliseconds: with an unlimited fixed-delay restart strategy each
 * failure closes and reopens RocksDB inside the same TaskManager JVM, which is where native
 * memory grows. The state backend (rocksdb) comes from flink-conf.yaml, so this job needs
 * only the Flink API.
 *
 * <p>Arguments: {@code --keys N} (distinct keys), {@code --value-bytes N} (state value
 * size), {@code --records-per-second N} (per source subtask), {@code --fail-every-ms N}
 * (0: never).
 */
public final class RocksDbRestartJob {

    private RocksDbRestartJob() {}

    public static void main(String[] args) throws Exception {
        ParameterTool params = ParameterTool.fromArgs(args);
        long keys = params.getLong("keys", 100_000L);
        int valueBytes = params.getInt("value-bytes", 256);
        long rate = params.getLong("records-per-second", 20_000L);
        long failEveryMs = params.getLong("fail-every-ms", 20_000L);

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setRestartStrategy(
                RestartStrategies.fixedDelayRestart(Integer.MAX_VALUE, Time.seconds(1)));
        env.addSource(new KeySource(keys, rate))
                .name("keys")
                .keyBy(new Identity())
                .flatMap(new StateWriter(valueBytes, failEveryMs))
                .name("rocksdb-state")
                .addSink(new DiscardingSink<>())
                .name("discard");
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

    /** Emits keys round-robin at a fixed rate until cancelled. */
    static final class KeySource extends RichParallelSourceFunction<Long> {
        private final long keys;
        private final long rate;
        private volatile boolean running = true;

        KeySource(long keys, long rate) {
            this.keys = keys;
            this.rate = rate;
        }

        @Override
        public void run(SourceContext<Long> ctx) throws Exception {
            long next = getRuntimeContext().getIndexOfThisSubtask();
            int step = getRuntimeContext().getNumberOfParallelSubtasks();
            long batch = Math.max(1, rate / 100);
            while (running) {
                long start = System.nanoTime();
                synchronized (ctx.getCheckpointLock()) {
                    for (long i = 0; i < batch; i++) {
                        ctx.collect(next % keys);
                        next += step;
                    }
                }
                long sleepMs = 10 - (System.nanoTime() - start) / 1_000_000;
                if (sleepMs > 0) {
                    Thread.sleep(sleepMs);
                }
            }
        }

        @Override
        public void cancel() {
            running = false;
        }
    }

    /** Writes a value per key into RocksDB and throws after the configured time. */
    static final class StateWriter extends RichFlatMapFunction<Long, Long> {
        private final int valueBytes;
        private final long failEveryMs;
        private transient ValueState<byte[]> state;
        private transient long openedAt;

        StateWriter(int valueBytes, long failEveryMs) {
            this.valueBytes = valueBytes;
            this.failEveryMs = failEveryMs;
        }

        @Override
        public void open(Configuration parameters) {
            state = getRuntimeContext().getState(new ValueStateDescriptor<>("value", byte[].class));
            openedAt = System.currentTimeMillis();
        }

        @Override
        public void flatMap(Long key, Collector<Long> out) throws Exception {
            byte[] previous = state.value();
            byte[] value = new byte[valueBytes];
            value[0] = (byte) (previous == null ? 1 : previous[0] + 1);
            state.update(value);
            if (failEveryMs > 0 && System.currentTimeMillis() - openedAt > failEveryMs) {
                throw new InjectedFailure(failEveryMs);
            }
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
