package bench;

import io.confluent.parallelconsumer.ParallelConsumerOptions;
import io.confluent.parallelconsumer.ParallelConsumerOptions.CommitMode;
import io.confluent.parallelconsumer.ParallelConsumerOptions.ProcessingOrder;
import io.confluent.parallelconsumer.ParallelStreamProcessor;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * The Java peer of pyrallel bench: confluentinc/parallel-consumer (Maven Central) running the benchmark workloads.
 *
 * <p>Same command line and same one-line JSON result as the Python contenders (see harness.py). ProcessingOrder
 * KEY / PARTITION / UNORDERED, maxConcurrency = --concurrency, commit mode PERIODIC_CONSUMER_ASYNCHRONOUS (the
 * library's default, with its offset map in the commit metadata). Workloads: noop; sleep5ms is Thread.sleep(5);
 * cpu2ms spins on the thread's own CPU clock for 2 ms (the same CPU time per record as the Python loop, which
 * Java would run far faster). With --log, every handled record appends "seq produced_us done_us" in the
 * harness's fixed-width format.
 */
public final class PcPeer {
    private static final int SEQ_DIGITS = 12;
    private static final int TS_DIGITS = 16;

    private final Map<String, String> args;
    private final String workload;
    private final long limit;
    private final double maxSeconds;
    private final CountDownLatch finished = new CountDownLatch(1);
    private final FileChannel log;
    private long firstCount;
    private long lastCount;
    private long first;
    private long last;
    private double firstTs;
    private double lastTs;

    private PcPeer(Map<String, String> args) throws IOException {
        this.args = args;
        this.workload = args.get("workload");
        this.limit = Long.parseLong(args.get("limit"));
        this.maxSeconds = Double.parseDouble(args.get("max-seconds"));
        String logPath = args.get("log");
        this.log = logPath == null ? null : FileChannel.open(Path.of(logPath), StandardOpenOption.CREATE,
                StandardOpenOption.WRITE, StandardOpenOption.APPEND);
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            args.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        }
        String name = args.getOrDefault("name", "java parallel-consumer");
        try {
            new PcPeer(args).run();
            System.exit(0);
        } catch (Exception e) {
            System.out.println("PYRALLEL_BENCH_RESULT {\"contender\": \"" + name + "\", \"error\": \""
                    + String.valueOf(e).replace("\\", "\\\\").replace("\"", "'") + "\"}");
            System.out.flush();
            System.exit(1);
        }
    }

    private void run() throws Exception {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("bootstrap"));
        props.put(ConsumerConfig.GROUP_ID_CONFIG, args.get("group"));
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, args.getOrDefault("session-timeout-ms", "45000"));
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props);

        ProcessingOrder order = ProcessingOrder.valueOf(args.getOrDefault("ordering", "key").toUpperCase(Locale.ROOT));
        ParallelConsumerOptions<byte[], byte[]> options = ParallelConsumerOptions.<byte[], byte[]>builder()
                .consumer(consumer)
                .ordering(order)
                .maxConcurrency(Integer.parseInt(args.getOrDefault("concurrency", "1000")))
                .commitMode(CommitMode.PERIODIC_CONSUMER_ASYNCHRONOUS)
                .build();
        ParallelStreamProcessor<byte[], byte[]> pc = ParallelStreamProcessor.createEosStreamProcessor(options);
        pc.subscribe(List.of(args.get("topic")));
        pc.poll(context -> handle(context.getSingleConsumerRecord()));

        double joinTimeout = Double.parseDouble(args.getOrDefault("join-timeout-s", "60"));
        long started = System.nanoTime();
        while (!finished.await(50, TimeUnit.MILLISECONDS)) {
            synchronized (this) {
                long now = System.nanoTime();
                if (firstCount == 0 && (now - started) / 1e9 > joinTimeout) {
                    throw new IllegalStateException("no record handled within " + joinTimeout + " s of the start");
                }
                if (firstCount > 0 && (now - first) / 1e9 > maxSeconds + 1) {
                    break;  // the topic ran dry before the limit
                }
            }
        }
        synchronized (this) {
            long counted = lastCount - firstCount;
            double seconds = (last - first) / 1e9;
            if (lastTs == 0) {
                lastTs = firstTs + seconds;
            }
            double rate = counted > 0 && seconds > 0 ? counted / seconds : 0.0;
            System.out.println(String.format(Locale.ROOT, "PYRALLEL_BENCH_RESULT {\"contender\": \"%s\", "
                    + "\"handled\": %d, \"counted\": %d, \"seconds\": %.4f, \"records_per_s\": %.1f, "
                    + "\"first_ts\": %.6f, \"last_ts\": %.6f}", args.getOrDefault("name", "java parallel-consumer"),
                    lastCount, counted, seconds, rate, firstTs, lastTs));
            System.out.flush();
        }
        pc.closeDontDrainFirst(Duration.ofSeconds(10));
    }

    private void handle(ConsumerRecord<byte[], byte[]> record) {
        switch (workload) {
            case "sleep5ms" -> sleep5ms();
            case "cpu2ms" -> spinCpu(2_000_000L);
            default -> { }
        }
        if (log != null) {
            writeLog(record.value());
        }
        observe();
    }

    private static void sleep5ms() {
        try {
            Thread.sleep(5);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static void spinCpu(long nanos) {
        java.lang.management.ThreadMXBean bean = java.lang.management.ManagementFactory.getThreadMXBean();
        long end = bean.getCurrentThreadCpuTime() + nanos;
        long x = 0;
        while (bean.getCurrentThreadCpuTime() < end) {
            for (int i = 0; i < 1000; i++) {
                x += (long) i * i % 7;
            }
        }
        if (x == 42) {
            System.out.print("");
        }
    }

    private void writeLog(byte[] value) {
        long seq = -1;
        long produced = 0;
        if (value != null && value.length > SEQ_DIGITS) {
            String text = new String(value, 0, Math.min(value.length, SEQ_DIGITS + 1 + TS_DIGITS + 1),
                    StandardCharsets.US_ASCII);
            seq = Long.parseLong(text.substring(0, SEQ_DIGITS));
            if (text.length() == SEQ_DIGITS + TS_DIGITS + 2 && text.charAt(SEQ_DIGITS + 1 + TS_DIGITS) == '|') {
                produced = Long.parseLong(text.substring(SEQ_DIGITS + 1, SEQ_DIGITS + 1 + TS_DIGITS));
            }
        }
        long doneUs = epochMicros();
        String line = String.format(Locale.ROOT, "%0" + SEQ_DIGITS + "d %0" + TS_DIGITS + "d %0" + TS_DIGITS + "d\n",
                seq, produced, doneUs);
        try {
            synchronized (log) {
                log.write(ByteBuffer.wrap(line.getBytes(StandardCharsets.US_ASCII)));
            }
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    private static long epochMicros() {
        java.time.Instant now = java.time.Instant.now();
        return now.getEpochSecond() * 1_000_000L + now.getNano() / 1000;
    }

    private synchronized void observe() {
        if (finished.getCount() == 0) {
            return;
        }
        long now = System.nanoTime();
        long completed = lastCount + 1;
        if (firstCount == 0) {
            firstCount = completed;
            first = now;
            firstTs = epochMicros() / 1e6;
        }
        lastCount = completed;
        last = now;
        if (completed >= limit || (now - first) / 1e9 >= maxSeconds) {
            lastTs = epochMicros() / 1e6;
            finished.countDown();
        }
    }
}
