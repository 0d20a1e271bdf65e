// PM2: `pm2 start examples/ecosystem.config.js`
module.exports = {
  apps: [
    {
      name: "killsync-worker",
      script: "killsync",
      args: "worker --concurrency 8 --metrics-port 9464",
      interpreter: "none",
      kill_timeout: 300000, // SIGTERM lets running jobs finish first
      autorestart: true,
      env: {
        KILLSYNC_DATABASE_URL: "postgresql://killsync@db.internal/killsync",
        KILLSYNC_BROKER_URL: "amqp://killsync:CHANGE-ME@mq.internal/killsync",
        KILLSYNC_CONTACT: "ops@example.org",
      },
    },
    {
      name: "killsync-queue",
      script: "killsync",
      args: "queue --one-line",
      interpreter: "none",
      cron_restart: "*/5 * * * *",
      autorestart: false,
    },
  ],
};
