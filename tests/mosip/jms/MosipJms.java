// Plays MOSIP's registration processor over OpenWire, as its MosipActiveMqImpl does
// (javax.jms with ActiveMQConnectionFactory): sends one request as a TextMessage or a
// BytesMessage and prints the JMS type and body of the reply with the same requestId, one
// request after the other. Usage: MosipJms BROKER_URL INBOUND OUTBOUND (text|byte JSON REQUEST_ID)...
import javax.jms.*;
import org.apache.activemq.ActiveMQConnectionFactory;

public class MosipJms {
    public static void main(String[] args) throws Exception {
        ActiveMQConnectionFactory factory = new ActiveMQConnectionFactory(args[0]);
        Connection connection = factory.createConnection();
        connection.start();
        Session session = connection.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageProducer producer = session.createProducer(session.createQueue(args[1]));
        producer.setTimeToLive(2700L * 1000L);
        MessageConsumer consumer = session.createConsumer(session.createQueue(args[2]));
        for (int i = 3; i + 2 < args.length; i += 3) {
            if (!roundTrip(session, producer, consumer, args[i], args[i + 1], args[i + 2])) {
                connection.close();
                System.exit(3);
            }
        }
        connection.close();
    }

    static boolean roundTrip(Session session, MessageProducer producer, MessageConsumer consumer,
                             String format, String json, String requestId) throws Exception {
        Message request;
        if (format.equals("byte")) {
            BytesMessage b = session.createBytesMessage();
            b.writeObject(json.getBytes("UTF-8"));
            request = b;
        } else {
            request = session.createTextMessage(json);
        }
        producer.send(request);
        long deadline = System.currentTimeMillis() + 60000;
        while (System.currentTimeMillis() < deadline) {
            Message m = consumer.receive(1000);
            if (m == null) continue;
            String body;
            String kind;
            if (m instanceof TextMessage) {
                kind = "TextMessage";
                body = ((TextMessage) m).getText();
            } else if (m instanceof BytesMessage) {
                kind = "BytesMessage";
                BytesMessage b = (BytesMessage) m;
                byte[] data = new byte[(int) b.getBodyLength()];
                b.readBytes(data);
                body = new String(data, "UTF-8");
            } else {
                kind = m.getClass().getSimpleName();
                body = "";
            }
            if (body.contains(requestId)) {
                System.out.println(kind);
                System.out.println(body);
                return true;
            }
        }
        return false;
    }
}
