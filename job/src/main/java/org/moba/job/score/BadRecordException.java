package org.moba.job.score;

/** An input record that cannot be scored; the message names the record id and the reason. */
public class BadRecordException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final String recordId;
    private final String reason;

    public BadRecordException(String recordId, String reason) {
        super("bad record '" + recordId + "': " + reason);
        this.recordId = recordId;
        this.reason = reason;
    }

    public String recordId() {
        return recordId;
    }

    public String reason() {
        return reason;
    }
}
