"""Generated long conversations for the recall benchmark (Korean and English).

Each conversation opens with unrelated small talk, has one *anchor* turn on a topic (a city's weather, a recipe, a
trip, ...), then many unrelated turns, and ends with a follow-up that only makes sense with the anchor ("아까 말한
도시 말고 부산은?"). The follow-ups name the anchor indirectly on purpose: words like "that city" or "the stew" rather
than the anchor's own words. Distractor turns are drawn from other domains, so the anchor is the one right answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# (domain, user anchor, assistant reply, follow-up)
ANCHORS_KO: list[tuple[str, str, str, str]] = [
    (
        "weather",
        "서울 날씨 알려줘",
        "오늘 서울은 맑고 낮 기온은 15도, 저녁에는 8도까지 내려갑니다.",
        "아까 말한 도시 말고 부산은?",
    ),
    (
        "recipe",
        "김치찌개 끓이는 법 알려줘",
        "돼지고기와 김치를 볶은 뒤 물을 붓고 두부와 파를 넣어 20분 끓이세요.",
        "아까 그 찌개에 돼지고기 대신 참치 넣어도 돼?",
    ),
    (
        "travel",
        "제주도 3박 4일 여행 일정 짜줘",
        "첫날은 공항 근처 해변, 둘째 날은 한라산, 셋째 날은 우도, 넷째 날은 시장 구경을 추천해요.",
        "그 섬 여행에서 둘째 날 등산은 빼고 다시 짜줘",
    ),
    (
        "movie",
        "봉준호 감독 영화 추천해줘",
        "기생충, 살인의 추억, 마더를 추천합니다. 모두 긴장감이 뛰어난 작품이에요.",
        "아까 추천해준 감독 작품 중에 제일 무서운 건 뭐야?",
    ),
    (
        "laptop",
        "개발용 노트북 150만원 이하로 추천해줘",
        "램 16GB 이상, SSD 512GB 제품을 고르세요. 맥북 에어 M2나 씽크패드 T14가 좋아요.",
        "그 컴퓨터들 중에 배터리가 더 오래 가는 건?",
    ),
    (
        "exercise",
        "허리 디스크에 좋은 운동 뭐가 있어?",
        "걷기, 수영, 코어 강화 스트레칭이 좋고 무거운 물건을 드는 운동은 피하세요.",
        "아까 말한 것 중에 집에서 할 수 있는 건 뭐야?",
    ),
    (
        "book",
        "무라카미 하루키 소설 읽어보고 싶은데 뭐부터 읽을까?",
        "노르웨이의 숲이나 해변의 카프카로 시작해 보세요.",
        "그 작가 책 중에 짧은 것도 있어?",
    ),
    (
        "flight",
        "인천에서 도쿄 가는 비행기 시간 얼마나 걸려?",
        "직항으로 약 2시간 20분 걸립니다.",
        "그럼 오사카까지는 비슷해?",
    ),
    (
        "plant",
        "몬스테라 물은 얼마나 자주 줘야 해?",
        "겉흙이 마르면 일주일에 한 번 정도 흠뻑 주세요. 겨울에는 더 드물게 주세요.",
        "아까 그 식물 잎이 노랗게 변하는 건 왜 그래?",
    ),
    (
        "exchange",
        "오늘 달러 환율 얼마야?",
        "실시간 환율은 확인할 수 없지만 최근 1달러는 약 1,350원 안팎이었습니다.",
        "그럼 엔화는 어때?",
    ),
    (
        "car",
        "전기차 충전은 집에서 어떻게 해?",
        "완속 충전기를 주차장에 설치하면 밤사이 충전할 수 있어요.",
        "그 차 겨울에 주행거리 많이 줄어?",
    ),
    (
        "coffee",
        "핸드드립 커피 맛있게 내리는 법 알려줘",
        "원두 15g에 92도 물 250ml를 세 번에 나눠 부으세요.",
        "아까 그 방법으로 아이스로 만들려면?",
    ),
    (
        "language",
        "일본어 히라가나 빨리 외우는 방법 있어?",
        "하루 10글자씩 단어와 함께 쓰면서 외우고 플래시카드로 복습하세요.",
        "그 다음에 가타카나는 어떻게 해?",
    ),
    (
        "baby",
        "돌 지난 아기 이유식 뭐 먹이면 좋아?",
        "진밥, 잘게 다진 채소와 고기, 두부 같은 부드러운 음식이 좋아요.",
        "아까 말한 음식 중에 알레르기 조심할 건?",
    ),
]

ANCHORS_EN: list[tuple[str, str, str, str]] = [
    (
        "weather",
        "What's the weather like in Seattle today?",
        "Seattle is cloudy with light rain and a high of 12°C.",
        "And what about Phoenix instead of that city?",
    ),
    (
        "recipe",
        "How do I make a classic carbonara?",
        "Cook spaghetti, fry guanciale, then mix eggs, pecorino and pepper off the heat.",
        "Can I use bacon in that pasta dish instead?",
    ),
    (
        "travel",
        "Plan a 3-day trip to Kyoto for me",
        "Day 1 Fushimi Inari, day 2 Arashiyama bamboo grove, day 3 Gion and Kiyomizu-dera.",
        "Swap the second day of that itinerary for something indoors",
    ),
    (
        "movie",
        "Recommend some Christopher Nolan films",
        "Try Inception, Interstellar and The Prestige.",
        "Which of that director's movies is the longest?",
    ),
    (
        "laptop",
        "Which laptop should I buy for programming under $1500?",
        "Look for 16 GB RAM: a MacBook Air M3 or a ThinkPad T14 are good picks.",
        "Which of those machines has the better keyboard?",
    ),
    (
        "exercise",
        "What exercises help with lower back pain?",
        "Walking, swimming, bird-dogs and gentle core work; avoid heavy lifting at first.",
        "Which of those can I do at home without equipment?",
    ),
    (
        "book",
        "I want to start reading Agatha Christie, where do I begin?",
        "Start with And Then There Were None or Murder on the Orient Express.",
        "Does that author have any short story collections?",
    ),
    (
        "flight",
        "How long is a flight from London to New York?",
        "A direct flight takes about 8 hours westbound and 7 hours back.",
        "Is it similar to fly to Boston?",
    ),
    (
        "plant",
        "How often should I water a fiddle leaf fig?",
        "Water when the top two inches of soil are dry, about once a week.",
        "Why are that plant's leaves turning brown?",
    ),
    (
        "exchange",
        "What's the euro to dollar exchange rate?",
        "I can't see live rates, but recently one euro was around 1.08 dollars.",
        "How about the British pound?",
    ),
    (
        "car",
        "How do I charge an electric car at home?",
        "Install a level 2 wall charger in your garage and charge overnight.",
        "Does that kind of car lose much range in winter?",
    ),
    (
        "coffee",
        "How do I brew good pour-over coffee?",
        "Use 15 g of beans to 250 ml of water at 93°C, poured in three stages.",
        "How would I make that iced?",
    ),
    (
        "language",
        "Any tips for learning Spanish verb conjugations?",
        "Learn the present tense of regular -ar, -er and -ir verbs first, then drill irregulars daily.",
        "What about the past tense after that?",
    ),
    (
        "baby",
        "What solid foods are good for a one-year-old?",
        "Soft rice, finely chopped vegetables and meat, tofu and fruit.",
        "Which of those foods might cause allergies?",
    ),
]

# (domain, user, assistant): unrelated turns, each in a domain no anchor uses.
DISTRACTORS_KO: list[tuple[str, str, str]] = [
    ("code", "파이썬에서 리스트 정렬은 어떻게 해?", "sorted(리스트)나 리스트.sort()를 쓰면 됩니다."),
    ("code", "자바스크립트 비동기 함수는 뭐야?", "async 함수는 Promise를 돌려주고 await로 결과를 기다립니다."),
    ("code", "깃에서 커밋 되돌리는 법", "git revert 커밋ID로 되돌리는 커밋을 새로 만드세요."),
    ("math", "12 곱하기 17은?", "204입니다."),
    ("math", "피타고라스 정리 설명해줘", "직각삼각형에서 빗변의 제곱은 나머지 두 변의 제곱의 합과 같습니다."),
    ("math", "소수가 뭐야?", "1과 자기 자신으로만 나누어지는 1보다 큰 자연수입니다."),
    ("pet", "강아지 산책은 하루에 몇 번 해야 해?", "보통 하루 두 번, 한 번에 30분 정도가 좋아요."),
    ("pet", "고양이가 밤에 자꾸 울어요", "놀이 시간을 늘리고 잠자기 전에 밥을 주면 도움이 됩니다."),
    ("work", "이메일 정중하게 거절하는 문장 써줘", "제안해 주셔서 감사합니다만, 이번에는 참여가 어렵겠습니다."),
    ("work", "회의록 양식 만들어줘", "날짜, 참석자, 안건, 결정 사항, 다음 할 일 순서로 적으세요."),
    ("work", "엑셀에서 중복 값 찾는 법", "조건부 서식의 중복 값 규칙을 쓰면 바로 표시됩니다."),
    ("history", "조선은 언제 세워졌어?", "1392년 이성계가 세웠습니다."),
    ("history", "세종대왕이 한 일은?", "훈민정음을 만들고 과학 기구 발명을 지원했습니다."),
    ("science", "빛의 속도는 얼마야?", "초속 약 30만 킬로미터입니다."),
    ("science", "광합성이 뭐야?", "식물이 빛으로 이산화탄소와 물에서 포도당과 산소를 만드는 과정입니다."),
    (
        "music",
        "기타 코드 C는 어떻게 잡아?",
        "검지로 2번 줄 1프렛, 중지로 4번 줄 2프렛, 약지로 5번 줄 3프렛을 누르세요.",
    ),
    ("music", "피아노 독학 가능해?", "가능합니다. 교재와 영상으로 매일 20분씩 연습하세요."),
    ("sleep", "잠이 안 올 때 어떻게 해?", "자기 전 휴대폰을 멀리하고 같은 시간에 눕는 습관을 들이세요."),
    ("money", "적금과 예금 차이가 뭐야?", "예금은 목돈을 한 번에 맡기고 적금은 매달 나눠 넣습니다."),
    ("money", "신용점수 올리는 방법", "카드 대금을 제때 내고 연체를 피하세요."),
    ("chat", "안녕! 오늘 기분 어때?", "안녕하세요! 저는 언제나 대화할 준비가 되어 있어요."),
    ("chat", "심심한데 재미있는 얘기 해줘", "문어는 심장이 세 개나 있대요."),
    ("chat", "고마워", "천만에요! 더 궁금한 게 있으면 물어보세요."),
    ("writing", "자기소개서 첫 문장 어떻게 써?", "지원 동기를 한 문장으로 분명하게 시작하세요."),
    ("writing", "맞춤법 '되'와 '돼' 구분법", "'되어'로 바꿔 말이 되면 '돼'를 씁니다."),
    ("game", "체스에서 캐슬링이 뭐야?", "킹과 룩을 한 번에 움직이는 특별한 수입니다."),
    ("game", "바둑 처음 배우는데 팁 있어?", "9줄 바둑판에서 단수와 활로부터 익히세요."),
    ("cleaning", "욕실 곰팡이 없애는 법", "락스를 희석해 뿌리고 10분 뒤 닦은 다음 환기하세요."),
    ("cleaning", "흰 옷 누렇게 된 거 어떻게 빨아?", "과탄산소다를 푼 따뜻한 물에 한 시간 담갔다가 빠세요."),
    ("health", "두통이 자주 있어요", "물을 충분히 마시고 계속되면 병원에 가 보세요."),
    ("health", "비타민 D는 왜 필요해?", "뼈 건강과 면역에 도움이 됩니다."),
    ("space", "화성까지 얼마나 걸려?", "탐사선으로 약 7개월 걸립니다."),
    ("space", "블랙홀은 왜 검게 보여?", "빛조차 빠져나오지 못하기 때문입니다."),
    ("art", "수채화 번짐 기법 알려줘", "종이를 먼저 물로 적신 뒤 물감을 떨어뜨리세요."),
    ("art", "사진 구도 잘 잡는 법", "삼분할 선에 주제를 두세요."),
    ("law", "전세 계약할 때 주의할 점", "등기부등본으로 근저당을 확인하고 확정일자를 받으세요."),
    ("law", "근로계약서 꼭 써야 해?", "네, 법으로 서면 작성과 교부가 의무입니다."),
    ("study", "집중력 높이는 공부법", "25분 공부하고 5분 쉬는 뽀모도로 기법을 써 보세요."),
    ("study", "영어 단어 암기 앱 추천", "간격 반복을 쓰는 앱이 효과적이에요."),
    ("phone", "휴대폰 배터리 오래 쓰는 법", "화면 밝기를 낮추고 백그라운드 앱을 정리하세요."),
]

DISTRACTORS_EN: list[tuple[str, str, str]] = [
    ("code", "How do I sort a list in Python?", "Use sorted(items) or items.sort()."),
    ("code", "What is an async function in JavaScript?", "It returns a Promise, and await waits for its result."),
    ("code", "How do I undo a git commit?", "git revert <commit> creates a commit that undoes it."),
    ("math", "What is 12 times 17?", "It's 204."),
    (
        "math",
        "Explain the Pythagorean theorem",
        "In a right triangle the square of the hypotenuse equals the sum of the squares of the other sides.",
    ),
    ("math", "What is a prime number?", "A whole number above 1 divisible only by 1 and itself."),
    ("pet", "How often should I walk my dog?", "Twice a day, about 30 minutes each time."),
    ("pet", "My cat keeps meowing at night", "Play with her more in the evening and feed her before bed."),
    (
        "work",
        "Write a polite email declining an offer",
        "Thank you for the offer; unfortunately I won't be able to take part this time.",
    ),
    ("work", "Give me a template for meeting notes", "Date, attendees, agenda, decisions, action items."),
    ("work", "How do I find duplicates in Excel?", "Use conditional formatting with the duplicate values rule."),
    ("history", "When did the Roman Empire fall?", "The Western Roman Empire fell in 476 AD."),
    ("history", "Who was the first president of the United States?", "George Washington."),
    ("science", "How fast is the speed of light?", "About 300,000 kilometres per second."),
    ("science", "What is photosynthesis?", "Plants turning light, water and carbon dioxide into glucose and oxygen."),
    (
        "music",
        "How do I play a C chord on guitar?",
        "Index on the B string 1st fret, middle on D 2nd fret, ring on A 3rd fret.",
    ),
    ("music", "Can I learn piano by myself?", "Yes: a method book, videos and 20 minutes of practice a day."),
    ("sleep", "I can't fall asleep, any advice?", "Keep screens away before bed and go to bed at the same time."),
    (
        "money",
        "What's the difference between a savings account and a CD?",
        "A CD locks your money for a fixed term at a fixed rate.",
    ),
    ("money", "How can I improve my credit score?", "Pay bills on time and keep your card balances low."),
    ("chat", "Hi! How are you today?", "Hi! I'm always ready for a chat."),
    ("chat", "Tell me something fun", "Octopuses have three hearts."),
    ("chat", "Thanks!", "You're welcome! Ask me anything else."),
    ("writing", "How should I open a cover letter?", "State in one sentence why you want the role."),
    ("writing", "When do I use affect versus effect?", "Affect is usually the verb, effect the noun."),
    ("game", "What is castling in chess?", "A special move of the king and a rook together."),
    ("game", "Any tips for a beginner at Go?", "Start on a 9x9 board and learn about liberties and atari."),
    (
        "cleaning",
        "How do I remove mould in the bathroom?",
        "Spray diluted bleach, wait ten minutes, scrub and ventilate.",
    ),
    ("cleaning", "How do I whiten yellowed shirts?", "Soak them for an hour in warm water with oxygen bleach."),
    ("health", "I get headaches often", "Drink enough water, and see a doctor if they keep coming."),
    ("health", "Why do we need vitamin D?", "It helps bones and the immune system."),
    ("space", "How long does it take to get to Mars?", "About seven months for a spacecraft."),
    ("space", "Why are black holes black?", "Not even light can escape them."),
    ("art", "How do I do wet-on-wet watercolour?", "Wet the paper first, then drop in the paint."),
    ("art", "How do I compose a better photo?", "Put your subject on the rule-of-thirds lines."),
    (
        "law",
        "What should I check before signing a lease?",
        "The deposit terms, who pays repairs and how to end it early.",
    ),
    ("law", "Do I need a written employment contract?", "It is strongly advised and required in many countries."),
    ("study", "How can I focus better when studying?", "Try the Pomodoro technique: 25 minutes on, 5 off."),
    ("study", "Recommend a way to memorise vocabulary", "Spaced-repetition flashcards work best."),
    ("phone", "How do I make my phone battery last longer?", "Lower the brightness and close background apps."),
]


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Case:
    """One long conversation: ``messages`` end with the follow-up; ``anchor`` indexes the anchor's user message."""

    language: str
    domain: str
    messages: list[Turn]
    anchor: int

    @property
    def follow_up(self) -> str:
        return self.messages[-1].content


def generate(count: int = 56, *, seed: int = 10, min_between: int = 20, max_between: int = 40) -> list[Case]:
    """``count`` conversations, half Korean and half English, with 20-40 unrelated turns after the anchor."""
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        korean = i % 2 == 0
        anchors = ANCHORS_KO if korean else ANCHORS_EN
        distractors = DISTRACTORS_KO if korean else DISTRACTORS_EN
        domain, question, answer, follow_up = anchors[(i // 2) % len(anchors)]
        before = rng.randint(2, 10)
        after = rng.randint(min_between, max_between)
        picks = [rng.choice(distractors) for _ in range(before + after)]
        messages: list[Turn] = []
        for _, q, a in picks[:before]:
            messages += [Turn("user", q), Turn("assistant", a)]
        anchor = len(messages)
        messages += [Turn("user", question), Turn("assistant", answer)]
        for _, q, a in picks[before:]:
            messages += [Turn("user", q), Turn("assistant", a)]
        messages.append(Turn("user", follow_up))
        cases.append(Case("ko" if korean else "en", domain, messages, anchor))
    return cases
