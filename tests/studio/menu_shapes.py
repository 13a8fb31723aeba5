"""Studio flows of different shapes, written for the tests of what the import understands of a menu.

The taxi flow is the issue's: keys and words go to different widgets, and after the menu the caller is
asked for their name, pickup address and pickup time, each answer confirmed by a second Gather.
"""

from __future__ import annotations

from typing import Any

from tests.studio.studio_flows import definition, flex, gather, say, split, state, trigger

OTHER_WORKFLOW_SID = "WW" + "fedcba9876543210" * 2


def set_variable(name: str, key: str, value: str, next_widget: str) -> dict[str, Any]:
    return state(
        name, "set-variables", [{"event": "next", "next": next_widget}], variables=[{"type": "string", "key": key, "value": value}]
    )


def confirmed_question(name: str, question: str, next_widget: str, retry: str) -> list[dict[str, Any]]:
    """A Gather asking `question`, then a Gather reading the answer back ("press 1 if that is right")."""
    return [
        gather(name, speech=f"confirm_{name}", timeout=retry, say=question),
        gather(
            f"confirm_{name}",
            keypress=f"check_{name}",
            say="I heard {{widgets." + name + ".SpeechResult}}. Press 1 if that is right, or 2 to say it again.",
        ),
        split(
            f"check_{name}",
            "{{widgets.confirm_" + name + ".Digits}}",
            [("right", "equal_to", next_widget, "1")],
            no_match=name,
        ),
    ]


def taxi_flow() -> dict[str, Any]:
    menu_prompt = (
        "Welcome to City Taxis. Press 1 or say taxi to hire a new taxi. Press 2 or say payment to pay for a past trip."
    )
    states = [
        trigger("main_menu"),
        gather("main_menu", speech="menu_speech", keypress="menu_digits", timeout="goodbye", say=menu_prompt),
        split(
            "menu_digits",
            "{{widgets.main_menu.Digits}}",
            [("If value equal_to 1", "equal_to", "pressed_taxi", "1"), ("If value equal_to 2", "equal_to", "pressed_payment", "2")],
            no_match="main_menu",
        ),
        split(
            "menu_speech",
            "{{widgets.main_menu.SpeechResult}}",
            [
                ("said taxi", "matches_any_of", "said_taxi", "taxi,cab,ride"),
                ("said payment", "matches_any_of", "said_payment", "payment,pay,bill"),
            ],
            no_match="main_menu",
        ),
        say("pressed_taxi", "ask_name", "You pressed 1. Let's book your taxi."),
        say("said_taxi", "ask_name", "Great, let's book your taxi."),
        *confirmed_question("ask_name", "Please say your name.", "ask_address", "goodbye"),
        *confirmed_question("ask_address", "What is the pickup address?", "ask_time", "goodbye"),
        *confirmed_question("ask_time", "What time would you like to be picked up?", "book_taxi", "goodbye"),
        state(
            "book_taxi",
            "make-http-request",
            [{"event": "success", "next": "taxi_booked"}, {"event": "failed", "next": "taxi_agents"}],
            method="POST",
            url="https://taxis.example.com/bookings",
            parameters=[
                {"key": "name", "value": "{{widgets.ask_name.SpeechResult}}"},
                {"key": "address", "value": "{{ widgets.ask_address.SpeechResult }}"},
                {"key": "time", "value": "{{widgets.ask_time.SpeechResult}}"},
            ],
        ),
        say(
            "taxi_booked",
            None,
            "Thanks {{widgets.ask_name.SpeechResult}}, your taxi is booked for {{widgets.ask_time.SpeechResult}}.",
        ),
        flex("taxi_agents", priority="10"),
        flex("pressed_payment", workflow=OTHER_WORKFLOW_SID, priority="5"),
        flex("said_payment", workflow=OTHER_WORKFLOW_SID, priority="5"),
        say("goodbye"),
    ]
    return definition(*states)


def taxi_execution(sid: str, *, said: str | None = None, pressed: str | None = None) -> dict[str, Any]:
    """An execution of the taxi flow as Studio exports it: the caller said or pressed their choice, and a
    taxi caller then gave a name, a pickup address and a time, each confirmed with 1."""
    if said:
        split_name, event, answer = "menu_speech", "speech", {"SpeechResult": said}
        taken = "said_taxi" if said in ("taxi", "cab", "ride") else "said_payment"  # as menu_speech matches
    else:
        split_name, event, answer = "menu_digits", "keypress", {"Digits": pressed}
        taken = "pressed_taxi" if pressed == "1" else "pressed_payment"
    widgets: dict[str, Any] = {"main_menu": answer}
    steps = [("Trigger", "main_menu", "incomingCall"), ("main_menu", split_name, event), (split_name, taken, "match")]
    if taken.endswith("taxi"):
        steps.append((taken, "ask_name", "audioComplete"))
        for question, said_then, following in (
            ("ask_name", "Sam Jones", "ask_address"),
            ("ask_address", "12 High Street", "ask_time"),
            ("ask_time", "seven in the morning", "book_taxi"),
        ):
            widgets[question] = {"SpeechResult": said_then}
            widgets[f"confirm_{question}"] = {"Digits": "1"}
            steps += [
                (question, f"confirm_{question}", "speech"),
                (f"confirm_{question}", f"check_{question}", "keypress"),
                (f"check_{question}", following, "match"),
            ]
    return {
        "sid": sid,
        "context": {"trigger": {"call": {"CallSid": "CA" + sid, "From": "+15005550006"}}, "widgets": widgets},
        "steps": [{"transitioned_from": a, "transitioned_to": b, "name": e} for a, b, e in steps],
    }


def nested_menus_flow() -> dict[str, Any]:
    """Sales leads to a menu of its own (new or used cars); support to a Flex queue."""
    return definition(
        trigger("main_menu"),
        gather(
            "main_menu",
            speech="menu_speech",
            keypress="menu_digits",
            say="For sales, say sales or press 1. For support, say support or press 2.",
        ),
        split(
            "menu_digits",
            "{{widgets.main_menu.Digits}}",
            [("If value equal_to 1", "equal_to", "sales_menu", "1"), ("If value equal_to 2", "equal_to", "support_queue", "2")],
            no_match="main_menu",
        ),
        split(
            "menu_speech",
            "{{widgets.main_menu.SpeechResult}}",
            [("sales", "contains", "sales_menu", "sales"), ("support", "contains", "support_queue", "support")],
            no_match="main_menu",
        ),
        gather("sales_menu", keypress="sales_digits", say="For new cars press 1. For used cars press 2."),
        split(
            "sales_digits",
            "{{widgets.sales_menu.Digits}}",
            [("new cars", "equal_to", "new_cars", "1"), ("used cars", "equal_to", "used_cars", "2")],
            no_match="sales_menu",
        ),
        flex("new_cars", priority="20"),
        flex("used_cars", priority="10"),
        flex("support_queue", workflow=OTHER_WORKFLOW_SID, priority="30"),
    )


def looping_menu_flow() -> dict[str, Any]:
    """A key that plays the options again, and unmatched callers sent back to the menu after an apology."""
    return definition(
        trigger("welcome"),
        say("welcome", "menu", "Thanks for calling Harbour Dental."),
        gather(
            "menu",
            speech="by_words",
            keypress="by_keys",
            timeout="sorry",
            say="Press 1 or say hours for our opening hours. Press 2 or say appointment to book. Press 9 to hear this again.",
        ),
        split(
            "by_keys",
            "{{widgets.menu.Digits}}",
            [
                ("hours", "equal_to", "hours_message", "1"),
                ("appointment", "equal_to", "booking_desk", "2"),
                ("repeat", "equal_to", "repeat_options", "9"),
            ],
            no_match="sorry",
        ),
        split(
            "by_words",
            "{{widgets.menu.SpeechResult}}",
            [
                ("hours", "matches_any_of", "hours_message", "hours,open,opening times"),
                ("appointment", "matches_any_of", "booking_desk", "appointment,book,booking"),
            ],
            no_match="sorry",
        ),
        say("hours_message", None, "We are open eight to six, Monday to Friday."),
        flex("booking_desk"),
        say("repeat_options", "menu", "Here are the options again."),
        say("sorry", "menu", "Sorry, I didn't get that."),
    )


def keys_only_flow() -> dict[str, Any]:
    """Keys only, Studio's generated condition names, widgets named for what they are: the prompt names two
    keys, a widget name the third, and nothing at all the fourth."""
    return definition(
        trigger("menu"),
        gather("menu", keypress="keys", say="For emergencies, press 1. Press 2 for billing."),
        split(
            "keys",
            "{{widgets.menu.Digits}}",
            [
                ("If value equal_to 1", "equal_to", "send_to_flex_1", "1"),
                ("If value equal_to 2", "equal_to", "send_to_flex_2", "2"),
                ("If value equal_to 3", "equal_to", "send_call_to_support", "3"),
                ("If value equal_to 4", "equal_to", "say_play_4", "4"),
            ],
            no_match="menu",
        ),
        flex("send_to_flex_1", priority="100"),
        flex("send_to_flex_2", workflow=OTHER_WORKFLOW_SID),
        state("send_call_to_support", "connect-call-to", [{"event": "callCompleted"}], noun="sip", sip_endpoint="sip:help@pbx.example.com"),
        say("say_play_4", None, "Goodbye."),
    )


def language_choice_flow() -> dict[str, Any]:
    """A language choice that sets `flow.variables.language`, then the menu every caller reaches."""
    return definition(
        trigger("choose_language"),
        gather("choose_language", keypress="language_keys", say="For English, press 1. Para español, oprima 2."),
        split(
            "language_keys",
            "{{widgets.choose_language.Digits}}",
            [("English", "equal_to", "set_english", "1"), ("Spanish", "equal_to", "set_spanish", "2")],
            no_match="set_english",
        ),
        set_variable("set_english", "language", "en-US", "main_menu"),
        set_variable("set_spanish", "language", "es-MX", "main_menu"),
        gather(
            "main_menu",
            speech="menu_speech",
            keypress="menu_digits",
            say="Say billing or press 1. Say support or press 2.",
        ),
        split(
            "menu_digits",
            "{{widgets.main_menu.Digits}}",
            [("billing", "equal_to", "billing_desk", "1"), ("support", "equal_to", "support_desk", "2")],
            no_match="main_menu",
        ),
        split(
            "menu_speech",
            "{{widgets.main_menu.SpeechResult}}",
            [("billing", "contains", "billing_desk", "bill"), ("support", "contains", "support_desk", "help")],
            no_match="main_menu",
        ),
        flex("billing_desk", attributes='{"language": "{{flow.variables.language}}"}'),
        flex("support_desk", workflow=OTHER_WORKFLOW_SID),
    )


def says_before_actions_flow() -> dict[str, Any]:
    """Each branch plays a line before the widget that does something; keys and words play different lines."""
    return definition(
        trigger("menu"),
        gather("menu", speech="words", keypress="keys", say="How can we help? You can also press 1 for orders or 2 for returns."),
        split(
            "keys",
            "{{widgets.menu.Digits}}",
            [("If value equal_to 1", "equal_to", "keys_orders_line", "1"), ("If value equal_to 2", "equal_to", "keys_returns_line", "2")],
            no_match="menu",
        ),
        split(
            "words",
            "{{widgets.menu.SpeechResult}}",
            [("order", "matches_any_of", "orders_line", "order,delivery,where is my parcel"), ("return", "contains", "returns_line", "return")],
            no_match="menu",
        ),
        say("keys_orders_line", "orders_hold", "You pressed 1."),
        say("orders_line", "orders_hold", "Let me find someone for your order."),
        say("orders_hold", "orders_desk", "Please hold."),
        say("keys_returns_line", "returns_desk", "You pressed 2."),
        say("returns_line", "returns_desk", "Returns, one moment."),
        flex("orders_desk"),
        flex("returns_desk", workflow=OTHER_WORKFLOW_SID),
    )
