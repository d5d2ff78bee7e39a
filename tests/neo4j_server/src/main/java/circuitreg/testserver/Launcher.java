package circuitreg.testserver;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;

/**
 * Starts Neo4j Community with Bolt on 127.0.0.1:PORT, data under HOME, and runs until its
 * standard input closes (so a test session that dies never leaves a server behind).
 *
 * <p>Usage: {@code java -cp ... circuitreg.testserver.Launcher HOME PORT [PAGECACHE_MIB]}.
 * Prints one line
 * {@code READY bolt://127.0.0.1:PORT} once Bolt accepts connections.
 */
public final class Launcher {
  private Launcher() {}

  public static void main(String[] args) throws IOException {
    if (args.length < 2 || args.length > 3) {
      System.err.println("usage: Launcher HOME PORT [PAGECACHE_MIB]");
      System.exit(2);
    }
    Path home = Path.of(args[0]);
    int port = Integer.parseInt(args[1]);
    long pageCacheMib = args.length == 3 ? Long.parseLong(args[2]) : 256;
    DatabaseManagementService dbms =
        new DatabaseManagementServiceBuilder(home)
            .setConfig(BoltConnector.enabled, true)
            .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
            .setConfig(HttpConnector.enabled, false)
            // Tests connect without credentials, as to a fresh local server.
            .setConfig(GraphDatabaseSettings.auth_enabled, false)
            // Tests keep it small (24 GiB shared with PyTorch); the store bench gives more.
            .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(pageCacheMib))
            .setConfig(GraphDatabaseSettings.shutdown_transaction_end_timeout, Duration.ofSeconds(2))
            .build();
    Runtime.getRuntime().addShutdownHook(new Thread(dbms::shutdown));
    System.out.println("READY bolt://127.0.0.1:" + port);
    System.out.flush();
    while (System.in.read() != -1) {
      // wait for the parent to close our standard input
    }
    dbms.shutdown();
  }
}
