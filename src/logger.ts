// pino everywhere; credentials never reach a log line.
import pino, { type Logger } from "pino";

export function createLogger(level: string): Logger {
  return pino({
    level,
    redact: {
      paths: [
        "req.headers.authorization",
        "headers.authorization",
        "*.headers.authorization",
        "authorization",
        "apiKey",
        "token",
        "*.token",
        "secret",
        "*.secret",
        "config.apiKey",
        "config.s3.secretAccessKey",
      ],
      censor: "[redacted]",
    },
  });
}
