"""A reconstruction of the reference bridge's media path, for a same-day baseline on this machine.

NOT the reference. The reference (twilio-samples/speech-assistant-openai-realtime-api-python, commit d70e251,
measured by the external load harness on 2026-11-23 at 120 calls) is not on this machine and cannot be fetched. This
file rebuilds its per-frame path from that sample's published design, with its pinned stack (FastAPI,
plain uvicorn, websockets 15): `/incoming-call` answers `<Connect><Stream>`; `/media-stream` opens one
Realtime socket per call and runs two coroutines: each Twilio `media` frame is json-parsed and forwarded
as one `input_audio_buffer.append`; each `response.output_audio.delta` is json-parsed, its base64
re-encoded, sent to Twilio as `media`, followed by one `mark` per delta. No routing, no business logic.

Run by `run.sh` (shared harness, same options as the reference's sweep).
"""
import asyncio
import base64
import json
import os

import uvicorn
import websockets
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.websockets import WebSocketDisconnect
from twilio.twiml.voice_response import Connect, VoiceResponse

OPENAI_API_KEY = os.getenv("OPENAI_API_KEY", "sk-fake")
OPENAI_REALTIME_URL = os.getenv("OPENAI_REALTIME_URL", "ws://127.0.0.1:8765/v1/realtime")
PORT = int(os.getenv("PORT", 5050))
TEMPERATURE = float(os.getenv("TEMPERATURE", 0.8))
VOICE = "alloy"
SYSTEM_MESSAGE = "You are a helpful and bubbly AI assistant."
LOG_EVENT_TYPES = ["error", "response.content.done", "rate_limits.updated", "response.done",
                   "input_audio_buffer.committed", "input_audio_buffer.speech_stopped",
                   "input_audio_buffer.speech_started", "session.created", "session.updated"]

app = FastAPI()


@app.get("/", response_class=JSONResponse)
async def index_page():
    return {"message": "Twilio Media Stream Server is running!"}


@app.api_route("/incoming-call", methods=["GET", "POST"])
async def handle_incoming_call(request: Request):
    response = VoiceResponse()
    response.say("Please wait while we connect your call to the AI voice assistant.")
    response.pause(length=1)
    response.say("O.K. you can start talking!")
    host = request.url.hostname
    connect = Connect()
    connect.stream(url=f"wss://{host}/media-stream")
    response.append(connect)
    return HTMLResponse(content=str(response), media_type="application/xml")


@app.websocket("/media-stream")
async def handle_media_stream(websocket: WebSocket):
    await websocket.accept()
    async with websockets.connect(
        f"{OPENAI_REALTIME_URL}?model=gpt-realtime&temperature={TEMPERATURE}&voice={VOICE}",
        additional_headers={"Authorization": f"Bearer {OPENAI_API_KEY}"},
    ) as openai_ws:
        await initialize_session(openai_ws)
        stream_sid = None
        latest_media_timestamp = 0
        last_assistant_item = None
        mark_queue = []
        response_start_timestamp_twilio = None

        async def receive_from_twilio():
            nonlocal stream_sid, latest_media_timestamp, last_assistant_item, response_start_timestamp_twilio
            try:
                async for message in websocket.iter_text():
                    data = json.loads(message)
                    if data["event"] == "media" and openai_ws.state.name == "OPEN":
                        latest_media_timestamp = int(data["media"]["timestamp"])
                        audio_append = {"type": "input_audio_buffer.append", "audio": data["media"]["payload"]}
                        await openai_ws.send(json.dumps(audio_append))
                    elif data["event"] == "start":
                        stream_sid = data["start"]["streamSid"]
                        response_start_timestamp_twilio = None
                        latest_media_timestamp = 0
                        last_assistant_item = None
                    elif data["event"] == "mark":
                        if mark_queue:
                            mark_queue.pop(0)
            except WebSocketDisconnect:
                if openai_ws.state.name == "OPEN":
                    await openai_ws.close()

        async def send_to_twilio():
            nonlocal stream_sid, last_assistant_item, response_start_timestamp_twilio
            try:
                async for openai_message in openai_ws:
                    response = json.loads(openai_message)
                    if response["type"] in LOG_EVENT_TYPES:
                        print(f"Received event: {response['type']}")
                    if response.get("type") == "response.output_audio.delta" and "delta" in response:
                        audio_payload = base64.b64encode(base64.b64decode(response["delta"])).decode("utf-8")
                        audio_delta = {"event": "media", "streamSid": stream_sid, "media": {"payload": audio_payload}}
                        await websocket.send_json(audio_delta)
                        if response.get("item_id") and response["item_id"] != last_assistant_item:
                            response_start_timestamp_twilio = latest_media_timestamp
                            last_assistant_item = response["item_id"]
                        await send_mark(websocket, stream_sid)
                    if response.get("type") == "input_audio_buffer.speech_started":
                        if last_assistant_item:
                            await handle_speech_started_event()
            except Exception as error:
                print(f"Error in send_to_twilio: {error}")

        async def handle_speech_started_event():
            nonlocal response_start_timestamp_twilio, last_assistant_item
            if mark_queue and response_start_timestamp_twilio is not None:
                elapsed_time = latest_media_timestamp - response_start_timestamp_twilio
                if last_assistant_item:
                    truncate_event = {"type": "conversation.item.truncate", "item_id": last_assistant_item,
                                      "content_index": 0, "audio_end_ms": elapsed_time}
                    await openai_ws.send(json.dumps(truncate_event))
                await websocket.send_json({"event": "clear", "streamSid": stream_sid})
                mark_queue.clear()
                last_assistant_item = None
                response_start_timestamp_twilio = None

        async def send_mark(connection, stream_sid):
            if stream_sid:
                mark_event = {"event": "mark", "streamSid": stream_sid, "mark": {"name": "responsePart"}}
                await connection.send_json(mark_event)
                mark_queue.append("responsePart")

        await asyncio.gather(receive_from_twilio(), send_to_twilio())


async def initialize_session(openai_ws):
    session_update = {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": "gpt-realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}},
                "output": {"format": {"type": "audio/pcmu"}, "voice": VOICE},
            },
            "instructions": SYSTEM_MESSAGE,
        },
    }
    await openai_ws.send(json.dumps(session_update))


if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=PORT)
