// CuratorDriver takes and releases Apache Curator InterProcessMutex locks on
// command, for coordkit's interop tests and speed comparison. The Go side
// (integration/curator.go) compiles this file with javac and runs it with the
// Curator jars on the class path:
//
//   java -cp <jars>:<classes> CuratorDriver <connectString> <sessionTimeoutMs> <connectionTimeoutMs>
//
// It prints "ready" once connected (or "error <message>" and exits 1), then
// reads one request a line on stdin and answers each with a line on stdout
// that starts with the request's id. Requests run concurrently; replies come
// in completion order.
//
//   <id> acquire <path> [waitMs]      -> <id> acquired <node> <czxid> | <id> timeout
//   <id> acquire-node <path>          -> <id> acquired <node>
//   <id> release <path>               -> <id> released
//   <id> bench-uncontended <path> <n> -> <id> ops <n> <seconds>
//   <id> bench-threads <path> <threads> <seconds> -> <id> ops <n> <seconds>
//   <id> quit                         -> <id> bye (then the process exits)
//   cancel <id>                       (no reply of its own)
//
// acquire reads the lock node's czxid with one more ZooKeeper call
// (checkExists) after InterProcessMutex.acquire() returns; acquire-node
// replies as soon as acquire() returns, with the node's path alone (which
// Curator knows without asking the server), so that it costs what
// Curator's users see. bench-uncontended first runs max(20, n/10) cycles
// untimed; bench-threads first runs its threads for a tenth of the seconds
// untimed, on the same path and mutexes.
//
// Any request may instead get "<id> error <message>", or "<id> cancelled"
// after a cancel. Each path has one InterProcessMutex, used by one worker
// thread (Curator's locks belong to threads), so acquire and release of a
// path run in order; a second acquire of a held path re-enters (Curator's
// semantics). Cancelling a waiting acquire interrupts it (Curator deletes its
// node); cancelling an acquire that already succeeded releases the lock.
// Benchmarks run on threads of their own with their own InterProcessMutex
// objects. stdout carries only the protocol; logging goes to stderr.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.zookeeper.data.Stat;

public final class CuratorDriver {
    /** InterProcessMutex with its protected lock-node path made visible. */
    static final class Mutex extends InterProcessMutex {
        Mutex(CuratorFramework client, String path) {
            super(client, path);
        }

        String node() {
            return getLockPath();
        }
    }

    /** A request that can be cancelled. */
    static final class Task {
        final long id;
        final String verb;
        final String path;
        Thread runner; // set while running
        boolean cancelled;
        boolean finished;
        boolean acquired; // an acquire that succeeded and was reported

        Task(long id, String verb, String path) {
            this.id = id;
            this.verb = verb;
            this.path = path;
        }
    }

    /** One path's mutex and the thread that owns it. */
    static final class PathWorker {
        final Mutex mutex;
        final ExecutorService thread;

        PathWorker(CuratorFramework client, String path) {
            mutex = new Mutex(client, path);
            thread = Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, "lock " + path);
                t.setDaemon(true);
                return t;
            });
        }
    }

    private static final Object OUT = new Object();
    private static CuratorFramework client;
    private static final Map<String, PathWorker> workers = new ConcurrentHashMap<>();
    private static final Map<Long, Task> tasks = new ConcurrentHashMap<>();
    private static final List<Thread> benchThreads = new ArrayList<>();

    static void reply(long id, String line) {
        say(id + " " + line);
    }

    static void say(String line) {
        synchronized (OUT) {
            System.out.println(line);
            System.out.flush();
        }
    }

    static String describe(Throwable e) {
        String msg = e.toString().replace('\n', ' ').replace('\r', ' ');
        return msg;
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            say("error usage: CuratorDriver <connectString> <sessionTimeoutMs> <connectionTimeoutMs>");
            System.exit(2);
        }
        int sessionMs = Integer.parseInt(args[1]);
        int connMs = Integer.parseInt(args[2]);
        client = CuratorFrameworkFactory.builder()
                .connectString(args[0])
                .sessionTimeoutMs(sessionMs)
                .connectionTimeoutMs(Math.min(connMs, sessionMs))
                .retryPolicy(new ExponentialBackoffRetry(100, 5))
                .build();
        client.start();
        if (!client.blockUntilConnected(connMs, TimeUnit.MILLISECONDS)) {
            say("error not connected to " + args[0] + " within " + connMs + " ms");
            client.close();
            System.exit(1);
        }
        say("ready");

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            line = line.trim();
            if (line.isEmpty()) {
                continue;
            }
            String[] f = line.split("\\s+");
            if (f[0].equals("cancel")) {
                if (f.length == 2) {
                    cancel(Long.parseLong(f[1]));
                }
                continue;
            }
            long id;
            try {
                id = Long.parseLong(f[0]);
            } catch (NumberFormatException e) {
                System.err.println("CuratorDriver: bad request line: " + line);
                continue;
            }
            if (f.length < 2) {
                reply(id, "error missing verb");
                continue;
            }
            try {
                if (dispatch(id, f)) {
                    return;
                }
            } catch (Exception e) {
                reply(id, "error " + describe(e));
            }
        }
        // stdin closed: the parent is gone or done with us.
        shutdown();
        System.exit(0);
    }

    /** Runs one request; returns true after quit. */
    static boolean dispatch(long id, String[] f) throws Exception {
        switch (f[1]) {
            case "acquire": {
                need(f, 3, 4);
                long waitMs = f.length == 4 ? Long.parseLong(f[3]) : -1;
                submit(id, "acquire", f[2], t -> acquire(t, waitMs, true));
                return false;
            }
            case "acquire-node": {
                need(f, 3, 3);
                submit(id, "acquire", f[2], t -> acquire(t, -1, false));
                return false;
            }
            case "release": {
                need(f, 3, 3);
                // Grants of this path reported to the caller are no longer
                // cancellable (a caller cancels before it sends more).
                String path = f[2];
                tasks.values().removeIf(x -> x.path.equals(path) && x.acquired);
                submit(id, "release", path, CuratorDriver::release);
                return false;
            }
            case "bench-uncontended": {
                need(f, 4, 4);
                String path = f[2];
                long n = Long.parseLong(f[3]);
                bench(id, path, () -> benchUncontended(path, n));
                return false;
            }
            case "bench-threads": {
                need(f, 5, 5);
                String path = f[2];
                int threads = Integer.parseInt(f[3]);
                double seconds = Double.parseDouble(f[4]);
                bench(id, path, () -> benchThreads(path, threads, seconds));
                return false;
            }
            case "quit":
                shutdown();
                reply(id, "bye");
                System.exit(0);
                return true;
            default:
                reply(id, "error unknown verb " + f[1]);
                return false;
        }
    }

    static void need(String[] f, int min, int max) {
        if (f.length < min || f.length > max) {
            throw new IllegalArgumentException("wrong number of arguments for " + f[1]);
        }
    }

    interface Body {
        String run(Task t) throws Exception;
    }

    interface Bench {
        String run() throws Exception;
    }

    /** Runs body on the path's worker thread. */
    static void submit(long id, String verb, String path, Body body) {
        Task t = new Task(id, verb, path);
        tasks.put(id, t);
        PathWorker w = workers.computeIfAbsent(path, p -> new PathWorker(client, p));
        w.thread.execute(() -> run(t, w, body));
    }

    static void run(Task t, PathWorker w, Body body) {
        synchronized (t) {
            if (t.cancelled) {
                finish(t, "cancelled");
                return;
            }
            t.runner = Thread.currentThread();
        }
        String out = null;
        Exception err = null;
        try {
            out = body.run(t);
        } catch (Exception e) {
            err = e;
        }
        synchronized (t) {
            t.runner = null;
            Thread.interrupted(); // a cancel that came too late to matter
            boolean got = err == null && out.startsWith("acquired ");
            if (t.cancelled) {
                if (got) {
                    releaseQuietly(w, t.id);
                }
                finish(t, "cancelled");
            } else if (err != null) {
                finish(t, "error " + describe(err));
            } else if (got) {
                t.acquired = true;
                t.finished = true; // stays in tasks: a later cancel releases
                reply(t.id, out);
            } else {
                finish(t, out);
            }
        }
    }

    static void finish(Task t, String out) {
        t.finished = true;
        tasks.remove(t.id);
        reply(t.id, out);
    }

    static void releaseQuietly(PathWorker w, long id) {
        try {
            w.mutex.release();
        } catch (Exception e) {
            System.err.println("CuratorDriver: release after cancel of " + id + ": " + describe(e));
        }
    }

    /**
     * Takes the path's mutex (waitMs < 0: as long as it takes) and replies
     * with its node, and with the node's czxid when withCzxid is set (one
     * more ZooKeeper call).
     */
    static String acquire(Task t, long waitMs, boolean withCzxid) throws Exception {
        Mutex m = workers.get(t.path).mutex;
        boolean ok;
        if (waitMs < 0) {
            m.acquire();
            ok = true;
        } else {
            ok = m.acquire(waitMs, TimeUnit.MILLISECONDS);
        }
        if (!ok) {
            return "timeout";
        }
        // Held: from here on a cancel must not interrupt the ZooKeeper calls
        // (run releases the lock instead).
        synchronized (t) {
            t.runner = null;
        }
        Thread.interrupted();
        String node = m.node();
        if (!withCzxid) {
            return "acquired " + node;
        }
        long czxid;
        try {
            Stat st = client.checkExists().forPath(node);
            if (st == null) {
                throw new IllegalStateException("lock node " + node + " vanished");
            }
            czxid = st.getCzxid();
        } catch (Exception e) {
            m.release();
            throw e;
        }
        return "acquired " + node + " " + czxid;
    }

    static String release(Task t) throws Exception {
        workers.get(t.path).mutex.release();
        return "released";
    }

    static void cancel(long id) {
        Task t = tasks.get(id);
        if (t == null) {
            return;
        }
        synchronized (t) {
            if (t.verb.equals("release")) {
                return; // quick, and interrupting it could leave the node behind
            }
            t.cancelled = true;
            if (t.runner != null) {
                t.runner.interrupt();
            } else if (t.finished && t.acquired) {
                // The caller gave up after the grant: give it back.
                tasks.remove(id);
                PathWorker w = workers.get(t.path);
                w.thread.execute(() -> releaseQuietly(w, id));
            }
        }
    }

    /** Runs a benchmark on a thread of its own, cancellable like a task. */
    static void bench(long id, String path, Bench b) {
        Task t = new Task(id, "bench", path);
        tasks.put(id, t);
        Thread th = new Thread(() -> {
            String out;
            try {
                out = b.run();
            } catch (Exception e) {
                out = (t.cancelled || e instanceof InterruptedException) ? "cancelled" : "error " + describe(e);
            }
            synchronized (t) {
                t.runner = null;
                t.finished = true;
            }
            tasks.remove(id);
            reply(id, out);
        }, "bench " + id);
        th.setDaemon(true);
        synchronized (t) {
            t.runner = th;
        }
        synchronized (benchThreads) {
            benchThreads.add(th);
        }
        th.start();
    }

    static String ops(long n, double seconds) {
        return String.format("ops %d %.6f", n, seconds);
    }

    /** n acquire + release cycles on one InterProcessMutex, after a warm-up of max(20, n/10) cycles. */
    static String benchUncontended(String path, long n) throws Exception {
        InterProcessMutex m = new InterProcessMutex(client, path);
        long warm = Math.max(20, n / 10);
        for (long i = 0; i < warm; i++) {
            cycle(m);
        }
        long start = System.nanoTime();
        for (long i = 0; i < n; i++) {
            cycle(m);
        }
        double secs = (System.nanoTime() - start) / 1e9;
        return ops(n, secs);
    }

    static void cycle(InterProcessMutex m) throws Exception {
        if (Thread.interrupted()) {
            throw new InterruptedException();
        }
        m.acquire();
        m.release();
    }

    /**
     * threads threads, each with its own InterProcessMutex on path (one
     * CuratorFramework), take and release the lock for the given seconds;
     * the count is the acquisitions that completed within the window.
     * First the same threads' mutexes run for a tenth of the seconds
     * untimed, on the same path: that creates the path's parents and warms
     * the code up outside the window, as coordkit's rows warm up for a
     * tenth of theirs before they are timed.
     */
    static String benchThreads(String path, int threads, double seconds) throws Exception {
        List<InterProcessMutex> ms = new ArrayList<>();
        for (int i = 0; i < threads; i++) {
            ms.add(new InterProcessMutex(client, path));
        }
        contend(ms, seconds / 10);
        return contend(ms, seconds);
    }

    /**
     * Runs one thread per mutex, each taking and releasing its mutex in a
     * loop for the given seconds, and returns the acquisitions completed
     * within the window. Every thread has released its mutex when it
     * returns.
     */
    static String contend(List<InterProcessMutex> ms, double seconds) throws Exception {
        int threads = ms.size();
        AtomicLong count = new AtomicLong();
        AtomicBoolean stop = new AtomicBoolean();
        AtomicBoolean failed = new AtomicBoolean();
        CountDownLatch go = new CountDownLatch(1);
        CountDownLatch done = new CountDownLatch(threads);
        List<Throwable> errors = new ArrayList<>();
        List<Thread> ts = new ArrayList<>();
        for (int i = 0; i < threads; i++) {
            InterProcessMutex m = ms.get(i);
            Thread th = new Thread(() -> {
                try {
                    go.await();
                    while (!stop.get()) {
                        m.acquire();
                        try {
                            if (!stop.get()) {
                                count.incrementAndGet();
                            }
                        } finally {
                            m.release();
                        }
                    }
                } catch (Throwable e) {
                    if (!(e instanceof InterruptedException)) {
                        failed.set(true);
                        synchronized (errors) {
                            errors.add(e);
                        }
                    }
                } finally {
                    done.countDown();
                }
            }, "bench-thread " + i);
            th.setDaemon(true);
            ts.add(th);
            th.start();
        }
        long start = System.nanoTime();
        go.countDown();
        try {
            long sleepMs = (long) (seconds * 1000);
            Thread.sleep(sleepMs);
        } catch (InterruptedException e) {
            stop.set(true);
            for (Thread th : ts) {
                th.interrupt();
            }
            done.await(30, TimeUnit.SECONDS);
            throw e;
        }
        stop.set(true);
        double secs = (System.nanoTime() - start) / 1e9;
        long n = count.get();
        if (!done.await(60, TimeUnit.SECONDS)) {
            for (Thread th : ts) {
                th.interrupt();
            }
            throw new IllegalStateException("bench threads did not stop within 60s");
        }
        if (failed.get()) {
            synchronized (errors) {
                throw new IllegalStateException("bench thread failed: " + describe(errors.get(0)));
            }
        }
        return ops(n, secs);
    }

    static void shutdown() {
        for (PathWorker w : workers.values()) {
            w.thread.shutdownNow();
        }
        synchronized (benchThreads) {
            for (Thread th : benchThreads) {
                th.interrupt();
            }
        }
        for (PathWorker w : workers.values()) {
            try {
                w.thread.awaitTermination(5, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                break;
            }
        }
        // Closing the client closes the session: the server deletes its
        // lock nodes at once.
        client.close();
    }
}
