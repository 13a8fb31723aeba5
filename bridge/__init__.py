"""Wire protocols: Twilio Media Streams, OpenAI Realtime, Twilio REST, TwiML."""
