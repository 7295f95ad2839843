"""notifier_service: Terra's endings as Web Push, Expo and FCM push, and signed webhooks."""
