"""The word lists of ``fsc_losses.negatives``: what it recognises in a caption and what it may
write in place of a word.

Hand-written for the vocabulary of everyday photo captions (COCO and the like); docs/negatives.md
says how it was built and what it covers. In every table a category is a string of groups
separated by ``,``; the words of one group, separated by ``/``, are synonyms (or near enough that
one would not make a caption false), so a word is never replaced by a word of its own group. A
replacement comes from the word's contrasts where :data:`CONTRASTS` lists any, else from another
group of its category.

Nouns are given in the singular (the plural follows the rules of ``negatives._plural``), verbs in
the base form (the ``-ing`` and ``-s`` forms follow ``negatives._inflect``), everything in lower
case. A phrase of several words is matched as one unit ("hot dog", "in front of").
"""

from __future__ import annotations

# Nouns by category. Any two nouns of a caption may be swapped; a noun is replaced by another of
# its category.
NOUNS: dict[str, str] = {
    "person": "man/guy/gentleman/male, woman/lady/female, boy, girl, child/kid/youngster, "
    "baby/infant/toddler, adult, teenager/teen",
    "family": "mother/mom/mum, father/dad, son, daughter, wife, husband, brother, sister, "
    "grandmother/grandma, grandfather/grandpa, bride, groom, friend, guest, twin, neighbor",
    "role": "skier, surfer, skateboarder, snowboarder, player/athlete, batter/hitter, catcher, "
    "pitcher, umpire/referee, chef/cook, police officer/policeman/officer/cop, soldier, "
    "rider, biker/cyclist/bicyclist, tourist, doctor, nurse, student, teacher, worker, "
    "vendor/seller, farmer, passenger, pedestrian, spectator, clown, cowboy, fireman/firefighter, "
    "businessman, waiter/waitress, photographer, pilot, driver, jockey, shepherd, customer, "
    "goalie/goalkeeper, coach, monk, priest, traveler, boater, motorcyclist, artist, musician, "
    "baker, butcher, mechanic, surgeon, dancer, singer, swimmer, runner, jogger, hiker, golfer, "
    "boxer, wrestler, kiteboarder/kitesurfer, windsurfer, tennis player, baseball player, "
    "soccer player, frisbee player, football player, cashier, clerk, janitor, carpenter, "
    "fisherman, sailor, captain, guard, security guard, king, queen, prince, princess, santa, "
    "instructor, president, politician, owner, competitor, model, performer, audience member",
    "animal": "dog/puppy/pup, cat/kitten/kitty, horse/pony, cow/calf/cattle, sheep/lamb, "
    "elephant, giraffe, zebra, bear, polar bear, goat, deer, pig, tiger, lion, monkey, squirrel, "
    "bull, buffalo/bison, moose, rabbit/bunny, rat, donkey, mule, camel, kangaroo, panda, wolf, "
    "fox, rhino, hippo, alligator, crocodile, frog, snake, lizard, turtle, antelope, gazelle, "
    "wildebeest, ram, ox, llama, ferret, poodle, terrier, bulldog, grizzly/grizzly bear, "
    "black bear, brown bear, cub, colt, foal, stallion, mare, raccoon, skunk, hedgehog, hamster, "
    "guinea pig, koala, leopard, cheetah, jaguar, hyena, gorilla, chimpanzee, husky, "
    "dalmatian, german shepherd, retriever, labrador, pug, chihuahua, beagle",
    "bird": "bird, duck, goose, pigeon/dove, seagull/gull, swan, chicken/hen/rooster, parrot, "
    "owl, eagle, crow, hawk, peacock, pelican, heron, penguin, flamingo, ostrich, toucan, "
    "sparrow, finch, robin, bluejay, cardinal, woodpecker, hummingbird, seabird, vulture, stork, "
    "crane, egret, puffin",
    "sea creature": "fish, dolphin, whale, shark, crab, lobster, octopus, seal, walrus, otter",
    "insect": "butterfly, bee, insect/bug, spider, fly, ant, moth, ladybug",
    "road vehicle": "car/automobile, bus, truck/lorry, van, taxi/cab, suv/jeep, limo/limousine, "
    "ambulance, fire truck/firetruck/fire engine, pickup truck/pickup, tractor, camper/rv, "
    "bulldozer, tow truck, dump truck, trailer, boxcar, semi/semi truck, police car, golf cart, "
    "double decker bus/double decker/double-decker, cart, wagon, carriage, horse carriage, "
    "buggy, rickshaw",
    "two-wheeler": "bicycle/bike, motorcycle/motorbike/motor cycle/motor bike, scooter, moped, "
    "unicycle, tricycle, segway, wheelchair, stroller",
    "rail vehicle": "train, trolley/streetcar/tram, subway, locomotive, freight train, "
    "passenger train, steam engine, cable car, train car",
    "aircraft": "airplane/plane/jet/jetliner/airliner/aircraft, helicopter, blimp, biplane, "
    "glider, hot air balloon, rocket",
    "boat": "boat, ship, canoe/kayak, sailboat, yacht, raft, ferry, jet ski, gondola",
    "board": "skateboard/skate board, surfboard/surf board, snowboard/snow board, ski, sled, "
    "boogie board, paddle board",
    "furniture": "table, chair, bed, couch/sofa, bench, desk, shelf, cabinet/cupboard, "
    "dresser, stool, armchair, nightstand, bookshelf/bookcase, ottoman, crib, futon, "
    "recliner, counter/countertop, coffee table, dining table, high chair, bunk bed, booth, "
    "vanity, headboard, rocking chair, lounge chair, deck chair, beach chair, sofa bed, shelving, "
    "stand, tv stand, drawer, mirror, fireplace",
    "textile": "cushion, pillow, mattress, blanket/quilt/comforter/duvet, rug/carpet/mat, "
    "curtain, towel, cloth, sheet/bed sheet, tablecloth, placemat, napkin, tarp, flag, banner",
    "room": "kitchen, bathroom/restroom, bedroom, living room, room, office, classroom, "
    "hallway/corridor, garage, lobby, attic, basement, closet, dining room, laundry room, "
    "kitchenette, hotel room, conference room, waiting room, dorm room, cockpit, shower stall, "
    "living area, dining area, public restroom, lounge, studio, kitchen counter, hall",
    "building": "restaurant/diner, store/shop, market, airport, station, church, tower, "
    "house/home, apartment, hotel, hospital, school, library, museum, bakery, cafe, bar/pub, "
    "barn, stable, castle, palace, temple, mosque, cathedral, factory, warehouse, shed, cabin, "
    "lodge, mall, supermarket, grocery store, arena, gym, stadium, bookstore, boutique, bank, "
    "post office, lighthouse, windmill, skyscraper, storefront, office building, pizzeria, "
    "train station, subway station, gas station, parking garage, tent, greenhouse, aquarium, "
    "jail/prison, food court, cafeteria, terminal, showroom, salon",
    "street": "street/road/roadway, sidewalk, highway/freeway, alley, intersection, crosswalk, "
    "curb/kerb, lane, avenue, parking lot, driveway, parking space, plaza, bus stop, "
    "train tracks/tracks, railroad/railway, platform, train platform, runway, tarmac, track, "
    "race track, boardwalk, pavement, dirt road, roadside, tunnel, bridge, overpass, "
    "courtyard, patio, porch, balcony, deck, roof, walkway, ledge, doorway, windowsill/sill, "
    "construction site, site, neighborhood, downtown, suburb, city, town, village, landmark",
    "grounds": "park, field, yard, lawn, garden, backyard, playground, skate park, court, "
    "tennis court, baseball field/ball field, soccer field, golf course, pasture/meadow, farm, "
    "zoo, enclosure, cage, corral, paddock, camp, campsite, ski slope/slope, ski resort, "
    "ski lift, path/trail, orchard, vineyard, farmland, grassland, prairie, savanna/savannah, "
    "habitat, countryside, wilderness, bleachers, dugout, stall, circus",
    "water": "water, ocean/sea, lake, river/stream/creek, pond, waterfall, puddle, surf, wave, "
    "canal, bay, lagoon, harbor, port, dock/pier, marsh/swamp, shore, coast, beach, seashore, "
    "waterfront, lakeside, riverbank, beachfront, body of water, current, dam",
    "land": "mountain, hill/hillside, valley, cliff, cave, rock/stone/boulder, sand, dirt/mud, "
    "ground, land, hole, island, desert, jungle, forest/woods, dune, canyon, ridge, peak, glacier, volcano, "
    "mountainside, hilltop, horizon, gravel, pebble",
    "plant": "tree, grass, flower, bush/shrub, hedge, weed, palm tree, pine tree, cactus, vine, "
    "moss, rose, tulip, daisy, sunflower, lily, orchid, greenery, vegetation, "
    "potted plant/houseplant, christmas tree, bouquet, wreath",
    "plant part": "leaf, branch/tree branch, log, stump, twig, root, petal, treetop, hay, straw, "
    "wood, firewood",
    "sky": "sky, cloud, sun, moon, rain, fog, mist, snow, ice, frost, storm, lightning, rainbow, "
    "sunset, sunrise, smoke, steam, fire, flame, wind, shade, landscape",
    "fruit": "apple, banana, orange, lemon, lime, grape, strawberry, blueberry, raspberry, "
    "cherry, peach, pear, pineapple, watermelon/melon, mango, kiwi, coconut, avocado, berry, "
    "fig, plum, apricot, grapefruit, tangerine, papaya",
    "vegetable": "broccoli, carrot, tomato, potato, onion, pepper, lettuce, spinach, cabbage, "
    "cauliflower, corn, bean, pea, cucumber, zucchini, mushroom, olive, squash, pumpkin, "
    "eggplant, radish, celery, asparagus, kale, artichoke, beet, garlic, herb, parsley, basil, "
    "cilantro, greens, floret, pickle, coleslaw",
    "dish": "pizza, sandwich/sub, hot dog/hotdog, burger/hamburger/cheeseburger, salad, soup, "
    "pasta/spaghetti/noodle, rice, fries/french fries, steak, sausage, bacon, ham, chicken wing, "
    "egg, omelet, sushi, taco, burrito, dumpling, stew, curry, casserole, lasagna, ravioli, "
    "macaroni, meatloaf, meatball, quiche, noodle soup, tofu, shrimp, salmon, turkey, beef, "
    "pork, lamb chop, cheese pizza, pepperoni pizza, mashed potato, baked potato, pepperoni, "
    "anchovy, cheese",
    "baked good": "cake, donut/doughnut, bread/loaf, cookie, cupcake, pie, muffin, bagel, "
    "waffle, pancake, toast, croissant, pretzel, pastry, bun, roll, biscuit, tortilla, pita, "
    "brownie, cheesecake, wedding cake, birthday cake, carrot cake, scone, danish, crepe, "
    "cinnamon roll, breadstick, cream puff, crust, sheet cake",
    "sweet": "ice cream, chocolate, candy, popsicle, lollipop, sundae, pudding, yogurt, "
    "sprinkles, frosting/icing, treat",
    "condiment": "condiment, butter, jam/jelly, honey, syrup, sauce, ketchup, mustard, mayonnaise, salt, "
    "sugar, oil, vinegar, dressing, salsa, dip, hummus, broth, cereal, oatmeal, nut, peanut, "
    "walnut, almond, cashew, pistachio, chips, cracker, popcorn, topping, ingredient, produce",
    "drink": "coffee, tea, wine, beer, juice, milk, soda/coke, cocktail, lemonade, smoothie, "
    "milkshake, champagne, whiskey, vodka, liquor, orange juice",
    "dishware": "plate/dish/platter, bowl, cup/mug, glass, bottle, tray, jar, vase, teapot/kettle, "
    "wine glass, tin can, saucer, coffee cup/coffee mug, tea cup/teacup, measuring cup, "
    "wine bottle, beer bottle, water bottle, soda can, paper plate, thermos, cooler, lunch box, "
    "pizza box, container, box, bag, plastic bag, basket, bucket, tupperware, lid",
    "utensil": "fork, knife, spoon, chopsticks, spatula, ladle, whisk, toothpick, utensil, "
    "pan/skillet, pot, cutting board, colander, grater, rolling pin, oven mitt, salt shaker, "
    "pepper shaker, napkin holder, candle, candle holder, dish rack, silverware/cutlery",
    "appliance": "refrigerator/fridge, oven, stove, microwave, toaster, sink, toilet, dishwasher, "
    "blender, mixer, coffee maker, freezer, washing machine/washer, dryer, heater, fan, "
    "air conditioner, bathtub/tub/bath, shower, faucet, urinal, hair dryer/hairdryer/hair drier, "
    "vending machine, grill/barbecue, furnace",
    "toiletry": "toothbrush, hair brush/hairbrush/brush, comb, toothpaste, soap, toilet paper, "
    "shower curtain, towel rack, "
    "trash can/garbage can/trashcan/trash bin, trash/garbage",
    "street fixture": "parking meter/meter, fire hydrant/hydrant, "
    "traffic light/stoplight/stop light/traffic signal, street light/streetlight/lamp post, "
    "stop sign, street sign, sign, billboard, mailbox, phone booth, bus shelter, traffic cone, "
    "barrier, fountain, sprinkler, scoreboard, awning",
    "device": "tv/television, computer/laptop/desktop, keyboard, mouse, mouse pad, "
    "monitor/screen, phone/cellphone/cell phone/smartphone/telephone, remote/remote control, "
    "controller/wii remote/wii controller/game controller, camera, clock, printer, speaker, "
    "headphones/headset, tablet/ipad, radio, microphone, video game, calculator, projector, "
    "router, console, joystick, watch, cable, cord, wire, charger, battery, antenna, "
    "satellite dish, wii, nintendo, xbox, playstation, gaming system/game console, videogame, "
    "flat screen/flatscreen, touchscreen, e-reader/kindle, mp3 player/ipod, dvd player, stereo, "
    "webcam, flash drive, hard drive, scale, switch/light switch, outlet, lamp, chandelier, lantern, "
    "light/light fixture/fixture",
    "garment": "shirt/t-shirt/tee, jacket/coat, tie/necktie, dress/gown, suit, pants/trousers, "
    "jeans, shorts, skirt, uniform, vest, sweater/sweatshirt/hoodie, wetsuit, bikini, swimsuit, "
    "apron, costume, robe, pajamas, jersey, blouse, tank top, overalls, raincoat, poncho, diaper, "
    "kimono, sari, ski suit, life jacket, tuxedo, wedding dress, trench coat, blazer, cardigan, "
    "polo shirt, nightgown, outfit, swim trunks/trunks",
    "accessory": "hat/cap, helmet, shoe/sneaker, boot, glasses/eyeglasses, sunglasses, scarf, "
    "glove/mitt, sock, belt, backpack, purse/handbag, wallet, necklace, bracelet, earring, "
    "goggles, mask, veil, beanie, bandana, headband, visor, ski boots, bow tie, cowboy hat, "
    "baseball cap, collar, lapel, boutonniere, crown, tiara, turban, hijab, sandal, flip flop, "
    "high heel, slipper, mitten, shin guard, knee pad, elbow pad",
    "sports gear": "frisbee/disc, kite, racket/racquet/tennis racket/tennis racquet, "
    "bat/baseball bat, ball, baseball, tennis ball, soccer ball, golf ball, golf club, "
    "ski pole/pole, paddle/oar, net, baseball glove/baseball mitt, skate, roller skate, "
    "skateboard ramp/ramp, hockey stick, puck, goal, hoop, basketball hoop, board, stick, "
    "dumbbell, yoga mat, home plate, mound, base",
    "household object": "umbrella, parasol, suitcase/luggage/baggage, briefcase, book, notebook, "
    "magazine/newspaper, paper, pencil/pen/marker, scissors, doll, teddy bear/teddy, "
    "stuffed animal/plush, balloon, rope, chain, leash, saddle, bridle, harness, ladder, shovel, "
    "rake, broom, mop, hammer, wrench, fishing rod/fishing pole, tripod, easel, trophy, medal, "
    "ticket, card, map, poster, painting, picture frame/frame, crate, barrel, trash bag, bin, "
    "plant pot/flower pot/pot plant, ornament, torch, cigarette, pipe, key, lock, bell, whistle, "
    "sticker, exhibit, rack, feeder/bird feeder, hanger, clothesline, laundry, cardboard box, "
    "envelope, letter, package/parcel, gift/present, ribbon, bow, dime/coin, money/cash, case, "
    "holder, canopy, blinds, hose, receipt, pocket, button, pocket knife, fire extinguisher, "
    "hammock, tag, supply, guitar, piano, drum, "
    "violin, trumpet, instrument, art/artwork, wrapper, tube, string, cargo, sculpture piece, "
    "display case, cardboard, newspaper stand, sign post, coat rack",
    "structure": "fence, gate, wall, window, door, floor, ceiling, stairs/staircase/steps, "
    "railing, rail, post, pillar/column, arch, tile, brick wall, podium, statue/sculpture, "
    "clock tower, monument, obelisk, tombstone, mural, graffiti, stripe",
    "vehicle part": "wheel, tire, engine, propeller, seat, bench seat, steering wheel, "
    "handlebar, pedal, windshield, license plate, bumper, hood, anchor, mast, sail, handle, "
    "side mirror, headlight, door handle, exhaust pipe, wing mirror",
    "body part": "head, hand, arm, leg, face, mouth, hair, eye, nose, ear, foot, body, tongue, "
    "tooth, neck, shoulder, knee, finger, beak, paw, hoof, horn, trunk, mane, wing, tail, "
    "feather, fur, beard, mustache, lap, lip, chest, belly/stomach, torso, elbow, wrist, thumb, toe",
    "time": "day/daytime, night/nighttime, morning, evening/dusk, afternoon, winter, summer, "
    "spring, fall/autumn",
    "sport": "tennis, soccer, football, basketball, volleyball, golf, hockey, rugby, cricket, "
    "baseball game, softball, polo, lacrosse, badminton, ping pong, frisbee game, chess, "
    "video games",
    "event": "wedding, party, parade, festival, concert, competition/contest, celebration, "
    "ceremony, race, tournament, rodeo, fair, carnival, picnic, protest, graduation, funeral",
    "shape": "cube, sphere, circle, square, triangle, star, cross, ring, cylinder, cone, block, "
    "heart, pyramid, rectangle, disk, hexagon",
}

# Nouns that are counted in the singular ("two water" rather than "two waters") and nouns that
# exist only in the plural.
UNCOUNTABLE = (
    "water, grass, snow, sand, dirt, mud, food, broccoli, rice, meat, cheese, bread, pasta, "
    "spaghetti, luggage, baggage, traffic, equipment, hair, milk, coffee, tea, wine, beer, juice, "
    "ice, ice cream, fruit, corn, lettuce, spinach, cabbage, garlic, beef, pork, bacon, ham, "
    "hay, straw, fog, rain, sky, sugar, salt, butter, honey, syrup, sauce, ketchup, mustard, "
    "mayonnaise, chocolate, candy, popcorn, oatmeal, yogurt, cereal, soup, tofu, sushi, "
    "frosting, icing, soda, lemonade, traffic, trash, garbage, oil, vinegar, wood, food, equipment, "
    "clothing, wildlife, livestock, electronics, stuff, meat, produce, champagne, whiskey, vodka, "
    "liquor, moss, shade, "
    "furniture, paper, toast, salmon, turkey, hummus, salsa, cauliflower, zucchini, cattle, "
    "jelly, jam, stew, curry, daytime, nighttime, tennis, soccer, football, basketball, "
    "volleyball, golf, hockey, rugby, cricket, softball, polo, lacrosse, badminton, ping pong, "
    "chess, fur, lightning, graffiti, sprinkles, chips, fries, french fries, video games, "
    "chopsticks, stairs, steps, tracks, train tracks, woods, overalls, pajamas, scissors, "
    "glasses, eyeglasses, sunglasses, pants, trousers, jeans, shorts, goggles, headphones, clothes, "
    "greens, bleachers, blinds"
)
# Irregular plurals ("singular plural", comma separated); "-man" nouns become "-men" by rule.
IRREGULAR_PLURALS = (
    "child children, person people, foot feet, tooth teeth, mouse mice, goose geese, ox oxen, "
    "knife knives, leaf leaves, shelf shelves, loaf loaves, wolf wolves, calf calves, "
    "scarf scarves, half halves, wife wives, sheep sheep, deer deer, fish fish, "
    "moose moose, bison bison, aircraft aircraft, buffalo buffalo, shrimp shrimp, "
    "tomato tomatoes, potato potatoes, cactus cacti, antelope antelope, "
    "wildebeest wildebeest"
)
# Words for people and things in general: swapped like any noun, but never replaced (a man is a
# person) nor written in place of another noun (a dog is an animal).
GENERIC_NOUNS = (
    "person, someone/somebody, individual, animal, creature, vehicle, thing, item, "
    "object, stuff, food, meal, dinner, lunch, breakfast, snack, dessert, drink/beverage, device, "
    "equipment, furniture, clothing/clothes, area, place, location, structure, building, game, toy, "
    "plant, vegetable/veggie, fruit, meat, tool, appliance, machine, electronics, decoration, "
    "wildlife, livestock, crowd, audience, family, team, couple, traffic, picture, photo/photograph, "
    "image, shot, selfie"
)
# Words that count or locate ("a group of", "the side of"): recognised so that they are never
# swapped or replaced, and never written in.
FUNCTION_NOUNS = (
    "group, bunch, lot, lots, pair, herd, flock, pile, stack, row, "
    "line, variety, number, assortment, collection, set, kind, type, sort, piece, slice, side, "
    "top, front, middle, back, bottom, edge, corner, view, close up, closeup, close-up, picture of, "
    "photo of, photograph of, image of, shot of, view of, reflection, scene, display, selection, "
    "array, dozen, handful, bit, "
    "part, spot, way, end, half, couple of, other, others, "
    "background, foreground, distance, air, sort of, something, anything, everything, "
    "nothing, color, colour, shape, size, center, centre, surface, match, trick, time, "
    "one another, each other, on display, on sale"
)

# Adjectives by category: swapped only with another of the same category.
ADJECTIVES: dict[str, str] = {
    "colour": "red, blue, green, yellow, orange, purple/violet, pink, brown, black, white, "
    "gray/grey, silver, gold/golden, cyan, magenta, beige/tan, navy, turquoise, maroon, teal",
    "size": "small/little/tiny/miniature, large/big/huge/giant/massive/enormous, tall, short, "
    "long, wide, narrow, thin/skinny, thick, fat/chubby",
    "material": "wooden/wood, metal/metallic/steel/iron, plastic, glass, rubber, stone, paper, "
    "leather, ceramic/porcelain, cotton, wool/woolen, concrete/cement, brick, wicker, marble, "
    "stainless steel, cardboard, straw, denim, silk, velvet, tin, copper, bronze, granite, "
    "tile/tiled, fur/furry",
    "age": "young, old, elderly, new, older, younger, antique/vintage/old-fashioned, modern",
    "state": "empty, full, open, closed/shut, wet, dry, clean, dirty/messy/cluttered, hot, cold, "
    "dark, bright/sunlit, busy/crowded, deserted, cooked, raw, sliced/cut, whole, happy, sad, "
    "fresh, rotten, high, low, heavy, light, fast, slow, asleep, awake, broken, healthy, "
    "half-eaten, uneaten, lit, unlit, filled, vacant, occupied, neat/tidy, frozen, melted",
    "weather": "sunny, cloudy/overcast, rainy, snowy, foggy/misty, stormy, windy, clear",
    "terrain": "grassy, sandy, rocky, muddy, dusty, icy, wooded, paved, dirt, snow-covered, lush, barren",
    "pattern": "striped, checkered/checked, plaid, floral/flowered, spotted/polka dot, "
    "patterned, plain, colorful/colourful/multicolored, camouflage",
    "shape attribute": "round/circular, square, rectangular, oval, triangular, curved, "
    "flat, pointed, heart-shaped",
    "sex": "male, female",
    "setting": "indoor, outdoor, urban, rural, public, private, domestic, wild",
    "temperature": "warm, cool",
}

# Verbs by category, in the base form; a verb is swapped with another in the same form (two
# -ing forms, or two -s forms) and replaced by another of its category.
VERBS: dict[str, str] = {
    "posture": "sit, stand, lie/lay, kneel, squat/crouch, lean, perch, bend",
    "motion": "walk, run/jog, jump/leap, fly, swim, ride, drive, ski, surf, skateboard, "
    "snowboard, climb, skate, dance, race, cross, wade, float, dive, crawl, hike, "
    "roll, slide, fall, sail, paddle, row, glide, march, chase, follow, lead, "
    "approach, enter, exit/leave, arrive, park, land, take off, travel/head/go, come",
    "handle": "hold, carry, wear, take, throw/toss, catch, hit, swing, push, pull, kick, grab, "
    "touch, lift, drop, wash, clean, fix/repair, open, close, fill, pour, paint, "
    "read, write, type, use, play, load, unload, pack, unpack, shake, wave, point, feed, "
    "build, sort, stack, hang, plant, water, mow, sweep, hug, pet, brush, comb",
    "eat": "eat, drink, chew, lick, bite, sip, taste, sniff/smell, graze",
    "look": "look/stare/gaze, watch, talk/speak, smile, laugh, sing, pose, cry, yell/shout, "
    "listen, wait, sleep, rest/relax, work, study",
    "cook": "cook, bake, grill, fry, boil, prepare, serve, chop, stir, mix, cut/slice, peel",
}

# Relations: swapped with another relation; replaced only by a contrast (many are idioms too:
# "in the air", "on the phone"), and "in" never.
RELATIONS = (
    "left of, right of, to the left of, to the right of, above, below, beneath, underneath, "
    "under, over, on top of, atop, on, in, inside, inside of, into, onto, outside, outside of, "
    "out of, in front of, behind, next to, beside, near, close to, far from, far away from, "
    "across from, opposite, around, between, among/amongst, along, alongside, across, through, "
    "against, toward/towards, away from, up, down, off, upon, within, past, by, with, at, "
    "in the middle of, at the top of, at the bottom of, on the side of, at the end of, "
    "on the edge of, at the edge of, in the back of, on the back of, in the corner of"
)
NUMBERS = "one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve"

# "A > B": every phrase of A contrasts with every phrase of B (and back). Listed words are
# replaced by their contrasts only: an opposite makes a harder, unambiguous negative.
CONTRASTS = (
    # adjectives
    "small/little/tiny > large/big/huge/giant; miniature > massive/enormous; tall > short; "
    "long > short; wide > narrow; thin/skinny > thick/fat/chubby; young/younger > old/older/elderly; "
    "new/modern > old/antique/vintage/old-fashioned; empty > full/filled; open > closed/shut; "
    "wet > dry; clean/neat/tidy > dirty/messy/cluttered; hot > cold/frozen; dark > bright/sunlit/light; "
    "busy/crowded > empty/deserted; cooked > raw; sliced/cut > whole; happy > sad; fresh > rotten; "
    "high > low; heavy > light; fast > slow; asleep > awake; lit > unlit; half-eaten > uneaten; "
    "vacant > occupied; frozen > melted; male > female; indoor > outdoor; "
    "urban > rural; public > private; sunny > cloudy/overcast/rainy/snowy/foggy/misty/stormy; "
    "clear > cloudy/overcast/foggy/misty; plain > striped/checkered/checked/plaid/floral/flowered/spotted/"
    "polka dot/patterned/colorful/colourful/multicolored; warm > cool/cold; "
    # nouns
    "man/guy/gentleman/male > woman/lady/female; boy > girl; man/woman/adult > boy/girl/child/kid/"
    "baby/infant/toddler/teenager/teen; mother/mom/mum > father/dad; son > daughter; "
    "wife > husband; brother > sister; grandmother/grandma > grandfather/grandpa; bride > groom; "
    "day/daytime > night/nighttime; morning > evening/dusk/night; winter > summer; "
    "spring > fall/autumn; sunrise > sunset; "
    # verbs
    "sit > stand; lie/lay > stand/sit; kneel > stand; push > pull; throw/toss > catch; "
    "open > close; enter > exit/leave; arrive > leave; lead > follow; load > unload; "
    "pack > unpack; land > take off; smile > cry; laugh > cry; "
    # relations
    "left of > right of; to the left of > to the right of; above/over/on top of/atop/upon > "
    "below/beneath/underneath/under; on > under/beneath; inside/inside of/within > outside/outside of; "
    "into > out of; onto > off; in front of > behind; next to/beside/near/close to/alongside > "
    "far from/far away from; toward/towards > away from; up > down; "
    "at the top of > at the bottom of; in the back of > in front of"
)

# -ing forms that double the last consonant (run -> running); other -ing and -s forms follow
# the rules in negatives._inflect.
DOUBLING_VERBS = "run, sit, swim, cut, hit, jog, drop, grab, hug, pet, sip, chop, stir"
# Relations that say the same read in either direction: swapping the two things they relate
# keeps the meaning ("a dog next to a cat" = "a cat next to a dog").
SYMMETRIC_RELATIONS = (
    "next to, beside, near, close to, alongside, by, across from, opposite, far from, far away from"
)
